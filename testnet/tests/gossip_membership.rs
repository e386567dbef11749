//! SWIM membership in the simulator: crashes are detected by every live member within the
//! documented bound and without false positives under loss; joins and graceful leaves
//! spread; data spreads over a SWIM-managed group.
//!
//! A failing case names its seed; `PEERLAB_SEEDS=<n>` replays it (see `peerlab_sim::testing`).

use std::collections::BTreeSet;
use std::time::Duration;

use peerlab_gossip::{Command, Config, Event, Gossip, MemberState, MemberUpdate};
use peerlab_overlay::{Keypair, PeerId};
use peerlab_sim::testing::for_each_seed;
use peerlab_sim::{Latency, Sim, SimConfig};
use peerlab_testnet::experiments::gossip::{MembershipParams, run_membership};

#[test]
fn crashes_are_detected_everywhere_without_false_positives() {
    for_each_seed(1..4, |seed| {
        let p = MembershipParams {
            nodes: 120,
            crash: 3,
            loss: 0.05,
            seed,
            runs: 1,
        };
        let r = run_membership(&p).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(r.undetected, 0, "seed {seed}: {r:?}");
        assert_eq!(r.false_positives, 0, "seed {seed}: {r:?}");
        let max = r.detection_rounds_max.unwrap();
        assert!(
            max <= r.detection_bound_rounds,
            "seed {seed}: {max} > bound"
        );
        assert!(
            r.join_rounds_full.is_some(),
            "seed {seed}: joiner not known by all"
        );
    });
}

#[test]
fn membership_runs_replay_from_their_seed() {
    let p = MembershipParams {
        nodes: 60,
        crash: 1,
        loss: 0.05,
        seed: 9,
        runs: 1,
    };
    let mut a = run_membership(&p).unwrap();
    let mut b = run_membership(&p).unwrap();
    a.wall_seconds = 0.0;
    b.wall_seconds = 0.0;
    assert_eq!(a, b);
}

fn group(n: u64, seed: u64) -> (Sim<Gossip>, Vec<PeerId>) {
    let mut sim: Sim<Gossip> = Sim::new(SimConfig {
        seed,
        latency: Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(40),
        },
        loss: 0.02,
        ..Default::default()
    });
    let keys: Vec<Keypair> = (0..n).map(Keypair::synthetic).collect();
    let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
    let records: Vec<MemberUpdate> = keys
        .iter()
        .map(|k| MemberUpdate::alive(k, 0, vec![format!("/sim/{}", k.peer_id())]))
        .collect();
    for key in keys {
        let p = key.peer_id();
        let others = records.iter().filter(|r| r.peer != p).cloned();
        let core =
            Gossip::with_members(key, vec![format!("/sim/{p}")], Config::lan(), others).unwrap();
        sim.add_node(p, core);
    }
    (sim, peers)
}

/// Honest members never charge each other: every record verifies, nothing is refused.
fn assert_honest(sim: &mut Sim<Gossip>, seed: u64) {
    let offences = sim.take_offences();
    assert!(
        offences.is_empty(),
        "seed {seed}: {} offences among honest members, first {:?}",
        offences.len(),
        offences.first()
    );
    for (p, g) in sim.cores() {
        assert_eq!(g.rejected().forged, 0, "seed {seed}: {p:?}");
    }
}

#[test]
fn data_spreads_over_a_swim_group_and_a_leave_is_seen_once_by_all() {
    for_each_seed(1..3, |seed| {
        let (mut sim, peers) = group(40, seed);
        sim.run_for(Duration::from_secs(2));
        sim.command(
            peers[3],
            Command::Publish {
                req: 1,
                key: "k".into(),
                value: b"v1".to_vec(),
            },
        );
        sim.command(
            peers[3],
            Command::Publish {
                req: 2,
                key: "k".into(),
                value: b"v2".to_vec(),
            },
        );
        sim.command(
            peers[7],
            Command::Delete {
                req: 3,
                key: "none".into(),
            },
        );
        sim.run_for(Duration::from_secs(5));
        for (p, g) in sim.cores() {
            let e = g
                .entry(&peers[3], "k")
                .unwrap_or_else(|| panic!("seed {seed}: {p:?} lacks k"));
            assert_eq!(
                (e.version, e.value.as_deref()),
                (2, Some(&b"v2"[..])),
                "seed {seed}"
            );
        }
        sim.take_events();
        sim.command(peers[5], Command::Leave);
        sim.run_for(Duration::from_secs(10));
        let mut left = BTreeSet::new();
        for (_, observer, ev) in sim.take_events() {
            match ev {
                Event::MemberLeft { peer } if peer == peers[5] => {
                    assert!(left.insert(observer), "seed {seed}: twice")
                }
                Event::MemberDown { peer } => {
                    panic!("seed {seed}: {peer:?} declared dead by {observer:?}")
                }
                _ => {}
            }
        }
        assert_eq!(
            left.len(),
            39,
            "seed {seed}: not every member saw the leave"
        );
        assert!(sim.node(&peers[5]).unwrap().has_left());
        assert_honest(&mut sim, seed);
        for (p, g) in sim.cores() {
            if p != peers[5] {
                assert_eq!(
                    g.member(&peers[5]).unwrap().state,
                    MemberState::Left,
                    "seed {seed}"
                );
            }
        }
    });
}

#[test]
fn a_member_that_was_declared_dead_rejoins_with_a_higher_incarnation() {
    let (mut sim, peers) = group(20, 5);
    sim.run_for(Duration::from_secs(2));
    // Cut one node off long enough to be declared dead, then heal.
    sim.set_partition(peers[2], 1);
    sim.run_for(Duration::from_secs(30));
    let dead = sim
        .cores()
        .filter(|(p, g)| {
            *p != peers[2]
                && g.member(&peers[2])
                    .is_some_and(|m| m.state == MemberState::Dead)
        })
        .count();
    assert_eq!(
        dead, 19,
        "every other member declares the isolated node dead"
    );
    sim.heal_partitions();
    sim.take_events();
    sim.run_until(sim.now() + Duration::from_secs(30));
    let ups: BTreeSet<PeerId> = sim
        .take_events()
        .into_iter()
        .filter(|(_, _, e)| matches!(e, Event::MemberUp { peer, .. } if *peer == peers[2]))
        .map(|(_, o, _)| o)
        .collect();
    assert_eq!(ups.len(), 19, "it is back up everywhere once it refutes");
    assert!(sim.node(&peers[2]).unwrap().incarnation() > 0);
    assert_honest(&mut sim, 5);
}

/// Partial view (`Config::partner_view`): a group that grows one join at a time through a
/// single seed keeps views that are uniform samples (no member ends up in most views, as
/// the first joiners would without reservoir sampling), views stay within their bound and
/// hold only other live members, and data still reaches every node.
#[test]
fn a_partial_view_stays_bounded_and_unbiased_and_data_still_spreads() {
    const N: u64 = 120;
    const K: usize = 8;
    for_each_seed(1..3, |seed| {
        let mut sim: Sim<Gossip> = Sim::new(SimConfig {
            seed,
            latency: Latency::Uniform {
                min: Duration::from_millis(5),
                max: Duration::from_millis(40),
            },
            ..Default::default()
        });
        let cfg = Config {
            partner_view: K,
            ..Config::lan()
        };
        let peers: Vec<PeerId> = (0..N).map(PeerId::synthetic).collect();
        let first = Gossip::with_members(
            Keypair::synthetic(0),
            vec![format!("/sim/{}", peers[0])],
            cfg.clone(),
            std::iter::empty(),
        )
        .unwrap();
        sim.add_node(peers[0], first);
        for (i, &p) in peers.iter().enumerate().skip(1) {
            let core = Gossip::new(
                Keypair::synthetic(i as u64),
                vec![format!("/sim/{p}")],
                cfg.clone(),
            )
            .unwrap();
            sim.add_node(p, core);
            sim.command(
                p,
                Command::Join {
                    seeds: vec![peers[0]],
                },
            );
            sim.run_for(Duration::from_millis(200));
        }
        sim.run_for(Duration::from_secs(30));
        let mut in_degree = std::collections::BTreeMap::<PeerId, usize>::new();
        for (p, g) in sim.cores() {
            assert_eq!(
                g.up_count(),
                N as usize - 1,
                "seed {seed}: {p:?} membership"
            );
            let view = g.partners();
            assert!(view.len() <= K, "seed {seed}: view of {}", view.len());
            let distinct: BTreeSet<_> = view.iter().collect();
            assert_eq!(distinct.len(), view.len(), "seed {seed}: duplicate partner");
            assert!(!view.contains(&p), "seed {seed}: self in view");
            for q in view {
                *in_degree.entry(*q).or_default() += 1;
            }
        }
        let max = in_degree.values().max().copied().unwrap_or(0);
        // Uniform views give in-degrees around K (binomial, max ≈ 2–3 K at this N); views
        // biased to the first joiners would give them in-degrees near N.
        assert!(max <= 4 * K, "seed {seed}: a member is in {max} views");
        sim.command(
            peers[17],
            Command::Publish {
                req: 1,
                key: "k".into(),
                value: b"v".to_vec(),
            },
        );
        sim.run_for(Duration::from_secs(10));
        for (p, g) in sim.cores() {
            assert!(
                g.entry(&peers[17], "k").is_some(),
                "seed {seed}: {p:?} lacks the update"
            );
        }
        assert_honest(&mut sim, seed);
    });
}
