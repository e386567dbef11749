//! `peerlab sim flood` at small sizes: determinism, the effect of TTL, and the strategies'
//! trade-offs. The full-size figures are in docs/experiments/flooding.md.

use peerlab_testnet::experiments::flood::{Params, Report, StrategyArg, Topology, run};

fn json_without_wall(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().remove("wall_seconds");
    v
}

fn small() -> Params {
    Params {
        nodes: 600,
        degree: 4,
        ttl: 7,
        queries: 60,
        replicas: 5,
        seed: 11,
        ..Params::default()
    }
}

#[test]
fn same_seed_gives_identical_json_but_wall_time() {
    for strategy in [StrategyArg::Flood, StrategyArg::RandomWalk] {
        let p = Params {
            strategy,
            topology: Topology::PowerLaw,
            ..small()
        };
        let a = run(&p).unwrap();
        let b = run(&p).unwrap();
        assert_eq!(json_without_wall(&a), json_without_wall(&b));
        let keys = serde_json::to_value(&a).unwrap();
        for k in [
            "nodes",
            "degree",
            "ttl",
            "strategy",
            "queries",
            "success_rate",
            "mean_messages_per_query",
            "mean_duplicate_messages_per_query",
            "mean_hits_per_query",
            "mean_first_hit_hops",
            "events",
            "wall_seconds",
        ] {
            assert!(keys.get(k).is_some(), "missing key {k}");
        }
        let c = run(&Params { seed: 12, ..p }).unwrap();
        assert_ne!(
            json_without_wall(&a),
            json_without_wall(&c),
            "the seed matters"
        );
    }
}

#[test]
fn lower_ttl_finds_less_and_costs_less() {
    let p = Params {
        nodes: 2000,
        ..small()
    };
    let t7 = run(&p).unwrap();
    let t2 = run(&Params { ttl: 2, ..p }).unwrap();
    assert!(t7.success_rate > 0.9, "{t7:?}");
    assert!(t2.success_rate < t7.success_rate, "{t2:?}");
    assert!(t2.mean_messages_per_query < t7.mean_messages_per_query / 5.0);
    assert!(t2.mean_first_hit_hops.unwrap() <= 2.0);
}

#[test]
fn walkers_and_rings_cost_less_than_flooding() {
    let p = Params {
        nodes: 2000,
        replicas: 40,
        ..small()
    };
    let flood = run(&p).unwrap();
    let walk = run(&Params {
        strategy: StrategyArg::RandomWalk,
        ..p.clone()
    })
    .unwrap();
    let ring = run(&Params {
        strategy: StrategyArg::ExpandingRing,
        ..p
    })
    .unwrap();
    assert!(flood.success_rate >= 0.99, "{flood:?}");
    assert!(walk.success_rate >= flood.success_rate - 0.05, "{walk:?}");
    assert!(ring.success_rate >= flood.success_rate - 0.05, "{ring:?}");
    assert!(
        walk.mean_messages_per_query * 5.0 <= flood.mean_messages_per_query,
        "{walk:?} vs {flood:?}"
    );
    assert!(
        ring.mean_messages_per_query < flood.mean_messages_per_query,
        "{ring:?}"
    );
    // Flooding pays in duplicates; a walker rarely revisits.
    assert!(flood.mean_duplicate_messages_per_query > walk.mean_duplicate_messages_per_query);
}
