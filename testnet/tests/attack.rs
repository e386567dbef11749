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

#[test]
fn dht_overwrite_is_refused_with_defenses_and_wins_without() {
    let (on, off) = separates(Kind::DhtOverwrite, 0.99, 0.9);
    // Every attacker was refused by honest replicas, and no honest peer was blamed.
    assert_eq!(on.attackers_struck, on.attackers, "{on:#?}");
    assert_eq!(on.offences_against_honest, 0);
    assert_eq!(off.offences_against_attackers, 0);
}

#[test]
fn dht_fill_by_a_few_writers_stops_at_their_quotas() {
    let (on, off) = separates(Kind::DhtFill, 0.99, 0.9);
    assert!(on.offences_by_name.contains_key("refused"), "{on:#?}");
    assert!(off.detail["honest stores full"] > 0, "{off:#?}");
    assert_eq!(on.detail["honest stores full"], 0, "{on:#?}");
}

#[test]
fn provider_flood_forgeries_are_convicted() {
    // What the defenses do catch: entries in others' names announced by the attacker,
    // and entries longer-lived than the bound.
    let on = attack(Kind::ProviderFlood, true);
    let off = attack(Kind::ProviderFlood, false);
    assert!(
        on.offences_by_name.get("forged").copied().unwrap_or(0) > 0,
        "{on:#?}"
    );
    assert_eq!(on.attackers_banned, on.attackers, "{on:#?}");
    assert!(
        off.honest_success_rate <= 0.9 * off.baseline_success_rate,
        "{off:#?}"
    );
}

/// The target for provider floods. The flood also pushes entries of made-up identities
/// (validly signed, within the lifetime bound) in `Store` batches; relayed entries never
/// push out providers that announced themselves, so honest providers stay found.
#[test]
fn provider_flood_is_refused_with_defenses() {
    separates(Kind::ProviderFlood, 0.99, 0.9);
}

#[test]
fn block_injection_is_dropped_and_denies_downloads_without_defenses() {
    let (on, off) = separates(Kind::BlockInject, 0.99, 0.9);
    // With the defenses, unsolicited blocks never reach a chunk; without, every attempt at
    // a poisoned chunk fails with mixed senders and nobody is struck.
    assert!(on.detail["unsolicited blocks dropped"] > 0, "{on:#?}");
    assert_eq!(off.detail["unsolicited blocks dropped"], 0, "{off:#?}");
    assert!(
        10 * on.detail["corrupt chunks rejected"] < off.detail["corrupt chunks rejected"],
        "on {:?} off {:?}",
        on.detail,
        off.detail
    );
    assert_eq!(off.offences_against_attackers, 0, "{off:#?}");
    assert!(on.attackers_banned > 0, "{on:#?}");
}

#[test]
fn member_poison_is_refused_with_defenses_and_kills_members_without() {
    let (on, off) = separates(Kind::MemberPoison, 0.99, 0.9);
    assert!(on.detail["forged records refused"] > 0, "{on:#?}");
    assert_eq!(off.detail["forged records refused"], 0, "{off:#?}");
}

/// Sybils placed just before target keys answer lookups for them with "the owner is me":
/// lookups that check who answers their last step route around them.
#[test]
fn sybil_eclipse_is_contained_with_defenses() {
    let (on, off) = separates(Kind::SybilEclipse, 0.95, 1.0);
    assert!(on.detail["target keys covered by sybils"] > 0, "{on:#?}");
    // Without the checks the sybils end the lookups for the keys they cover …
    assert!(
        off.honest_success_rate < off.baseline_success_rate,
        "{off:#?}"
    );
    // … with them every such answer is refused and reported, and no honest peer is blamed.
    assert!(
        on.offences_by_name.get("malformed").copied().unwrap_or(0) > 0,
        "{on:#?}"
    );
    assert_eq!(on.offences_against_honest, 0, "{on:#?}");
    assert_eq!(off.offences_against_attackers, 0, "{off:#?}");
}

#[test]
fn same_seed_same_report() {
    let a = attack(Kind::DhtOverwrite, true);
    let b = attack(Kind::DhtOverwrite, true);
    let strip = |r: &Report| {
        let mut v = serde_json::to_value(r).unwrap();
        v.as_object_mut().unwrap().remove("wall_seconds");
        v
    };
    assert_eq!(strip(&a), strip(&b));
}
