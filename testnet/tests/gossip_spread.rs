//! Gossip data spreading in the simulator: combined mode reaches every live node despite
//! loss and crashes; rumor mongering alone leaves a residue; runs replay from their seed.
//!
//! A failing case names its seed; `PEERLAB_SEEDS=<n>` replays it (see `peerlab_sim::testing`).

use peerlab_sim::testing::for_each_seed;
use peerlab_testnet::experiments::gossip::{ExchangeArg, ModeArg, Params, VariantArg, run};

#[test]
fn combined_mode_reaches_every_node_with_loss_and_crashes() {
    for_each_seed(1..6, |seed| {
        let p = Params {
            nodes: 400,
            mode: ModeArg::Combined,
            loss: 0.05,
            churn_rate: 0.01,
            updates: 3,
            seed,
            ..Params::default()
        };
        let r = run(&p).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(r.residue, 0.0, "seed {seed}: {r:?}");
        assert!(r.rounds_to_full.is_some(), "seed {seed}");
        assert_eq!(r.rejected, 0, "seed {seed}: benign run refused input");
    });
}

#[test]
fn every_exchange_direction_completes_under_anti_entropy() {
    for exchange in [ExchangeArg::Push, ExchangeArg::Pull, ExchangeArg::PushPull] {
        let p = Params {
            nodes: 300,
            mode: ModeArg::AntiEntropy,
            exchange,
            seed: 3,
            ..Params::default()
        };
        let r = run(&p).unwrap();
        assert_eq!(r.residue, 0.0, "{exchange:?}: {r:?}");
        // Anti-entropy alone spreads no rumors: no pushes, only exchanges.
        let full = r.rounds_to_full.unwrap();
        assert!(
            full >= (300f64).log(3.0).floor(),
            "{exchange:?} finished in {full} rounds"
        );
    }
}

#[test]
fn rumor_mongering_alone_leaves_a_residue_that_anti_entropy_removes() {
    let base = Params {
        nodes: 500,
        variant: VariantArg::BlindCoin,
        k: 1,
        fanout: 1,
        runs: 4,
        seed: 11,
        ..Params::default()
    };
    let rumor = run(&Params {
        mode: ModeArg::Rumor,
        ..base.clone()
    })
    .unwrap();
    assert!(
        rumor.residue > 0.5,
        "blind coin k = 1 dies out early: {rumor:?}"
    );
    let combined = run(&Params {
        mode: ModeArg::Combined,
        ..base
    })
    .unwrap();
    assert_eq!(combined.residue, 0.0, "{combined:?}");
}

#[test]
fn same_seed_same_result() {
    let p = Params {
        nodes: 300,
        loss: 0.05,
        churn_rate: 0.01,
        updates: 2,
        seed: 42,
        ..Params::default()
    };
    let strip = |mut r: peerlab_testnet::experiments::gossip::Report| {
        r.wall_seconds = 0.0;
        r
    };
    let a = strip(run(&p).unwrap());
    let b = strip(run(&p).unwrap());
    assert_eq!(a, b);
    let c = strip(run(&Params { seed: 43, ..p }).unwrap());
    assert_ne!(a, c, "a different seed should give a different run");
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    for p in [
        Params {
            nodes: 1,
            ..Params::default()
        },
        Params {
            k: 0,
            ..Params::default()
        },
        Params {
            loss: 1.5,
            ..Params::default()
        },
        Params {
            fanout: 0,
            ..Params::default()
        },
        Params {
            updates: 0,
            ..Params::default()
        },
        Params {
            churn_rate: 0.9,
            ..Params::default()
        },
        Params {
            runs: 0,
            ..Params::default()
        },
    ] {
        assert!(run(&p).is_err(), "{p:?}");
    }
}
