//! `peerlab sim attack` at small scale: for each kind, the defended run keeps honest
//! operations succeeding where the undefended one does not. Each test runs the attack both
//! ways with the same seed, so a defense that stopped working (or an attack that stopped
//! attacking) fails it.

use peerlab_testnet::experiments::attack::{Kind, Params, Report, run};

/// Peers in the fast runs: enough for replica sets, gaps to grind into and a swarm.
const NODES: usize = 60;

fn attack(kind: Kind, defenses: bool) -> Report {
    run(&Params {
        kind,
        fraction: 0.1,
        nodes: NODES,
        seed: 7,
        no_defenses: !defenses,
        sweep: false,
        seeds: 1,
    })
    .expect("the run completes")
}

/// The defended run keeps at least `keep` of the baseline's success, and the undefended
/// run at most `hurt` of it.
fn separates(kind: Kind, keep: f64, hurt: f64) -> (Report, Report) {
    let on = attack(kind, true);
    let off = attack(kind, false);
    assert!(on.baseline_success_rate > 0.9, "{kind:?} baseline: {on:#?}");
    assert!(
        on.honest_success_rate >= keep * on.baseline_success_rate,
        "{kind:?} with defenses: {on:#?}"
    );
    assert!(
        off.honest_success_rate <= hurt * off.baseline_success_rate,
        "{kind:?} without defenses: {off:#?}"
    );
    (on, off)
}
