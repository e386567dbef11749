//! The flooding core in the simulator: end-to-end TTL semantics, reverse-path answers,
//! discovery and neighbour replacement under crashes.

use std::time::Duration;

use peerlab_overlay::flood::{self, Command, Event, Flood, Strategy};
use peerlab_overlay::{Instant, PeerId};
use peerlab_sim::{Latency, Sim, SimConfig};

fn p(n: u64) -> PeerId {
    PeerId::synthetic(n)
}

fn sim(seed: u64) -> Sim<Flood> {
    Sim::new(SimConfig {
        seed,
        latency: Latency::Fixed(Duration::from_millis(20)),
        unreachable_notice: Some(Duration::from_millis(100)),
        ..SimConfig::default()
    })
}

fn add(sim: &mut Sim<Flood>, n: u64, config: &flood::Config) {
    sim.add_node(p(n), Flood::new(p(n), config.clone()).unwrap());
}

fn link(sim: &mut Sim<Flood>, a: u64, b: u64) {
    sim.command(p(a), Command::AddNeighbours(vec![p(b)]));
    sim.command(p(b), Command::AddNeighbours(vec![p(a)]));
}

fn search(sim: &mut Sim<Flood>, origin: u64, req: u64, ttl: u8, strategy: Strategy) {
    sim.command(
        p(origin),
        Command::Search {
            req,
            terms: "needle".into(),
            strategy,
            ttl: Some(ttl),
            want_hits: 1,
        },
    );
}

fn done(events: &[(Instant, PeerId, Event)], req: u64) -> Option<(u32, Option<u16>)> {
    events.iter().find_map(|(_, _, e)| match e {
        Event::SearchDone {
            req: r,
            hits,
            first_hit_hops,
            ..
        } if *r == req => Some((*hits, *first_hit_hops)),
        _ => None,
    })
}

/// A path 0 - 1 - … - 9 with the item at node 5: a TTL-t flood from 0 reaches exactly the
/// nodes at distance ≤ t, and the hit comes back along the path with the right hop count.
#[test]
fn flood_reaches_exactly_ttl_hops_and_hits_return_along_the_path() {
    let config = flood::Config {
        min_degree: 1,
        ..flood::Config::default()
    };
    let mut s = sim(1);
    for n in 0..10 {
        add(&mut s, n, &config);
    }
    for n in 0..9 {
        link(&mut s, n, n + 1);
    }
    s.command(
        p(5),
        Command::Share {
            name: "the needle.txt".into(),
        },
    );
    search(&mut s, 0, 1, 4, Strategy::Flood);
    s.run_for(Duration::from_secs(2));
    search(&mut s, 0, 2, 5, Strategy::Flood);
    s.run_for(Duration::from_secs(2));
    let ev = s.take_events();
    assert_eq!(done(&ev, 1), Some((0, None)), "TTL 4 stops one hop short");
    assert_eq!(done(&ev, 2), Some((1, Some(5))));
    // The TTL-5 flood went no further than node 5: nodes 6.. never saw a Query.
    for n in 6..10 {
        assert_eq!(
            s.node(&p(n)).unwrap().counters().queries_received,
            0,
            "node {n}"
        );
    }
    // The hit was relayed by nodes 4, 3, 2, 1 and nobody else.
    for n in 1..5 {
        assert_eq!(s.node(&p(n)).unwrap().counters().hits_routed, 1, "node {n}");
    }
    // Expanding ring finds it in the ring of TTL 8 (rings 1, 2, 4, 8), not earlier.
    search(&mut s, 0, 3, 8, Strategy::ExpandingRing);
    s.run_for(Duration::from_secs(5));
    let ev = s.take_events();
    let rings = ev.iter().find_map(|(_, _, e)| match e {
        Event::SearchDone {
            req: 3,
            rings,
            hits,
            ..
        } => Some((*rings, *hits)),
        _ => None,
    });
    assert_eq!(rings, Some((4, 1)));
}

/// A random walk on a ring of 40 nodes finds the only replica and stops its walkers soon
/// after (check-backs), instead of spending the whole step budget.
#[test]
fn random_walk_finds_item_and_stops() {
    let config = flood::Config {
        min_degree: 1,
        ..flood::Config::default()
    };
    let mut s = sim(3);
    for n in 0..40 {
        add(&mut s, n, &config);
    }
    for n in 0..40 {
        link(&mut s, n, (n + 1) % 40);
    }
    s.command(
        p(20),
        Command::Share {
            name: "needle".into(),
        },
    );
    search(
        &mut s,
        0,
        9,
        7,
        Strategy::RandomWalk {
            walkers: 2,
            steps: 1000,
        },
    );
    s.run_for(Duration::from_secs(300));
    let ev = s.take_events();
    let (hits, hops) = done(&ev, 9).expect("search finished");
    assert_eq!(hits, 1);
    assert!(hops.unwrap() >= 20, "at least the ring distance");
    let steps: u64 = s.cores().map(|(_, c)| c.counters().walk_steps).sum();
    assert!(
        steps < 2 * 1000,
        "walkers were stopped early: {steps} steps"
    );
}

/// A newcomer that knows one bootstrap peer discovers others through Ping/Pong and grows
/// to its minimum degree.
#[test]
fn newcomer_discovers_neighbours_through_pongs() {
    let config = flood::Config {
        min_degree: 3,
        max_degree: 6,
        ..flood::Config::default()
    };
    let mut s = sim(5);
    for n in 0..12 {
        add(&mut s, n, &config);
    }
    for n in 0..12 {
        link(&mut s, n, (n + 1) % 12);
        link(&mut s, n, (n + 3) % 12);
    }
    add(&mut s, 100, &config);
    link(&mut s, 100, 0);
    s.run_for(Duration::from_secs(60));
    let me = s.node(&p(100)).unwrap();
    assert!(
        me.neighbours().len() >= 3,
        "degree {}",
        me.neighbours().len()
    );
    // Links are mutual: every neighbour of the newcomer lists it back.
    for q in me.neighbours().peers() {
        assert!(s.node(&q).unwrap().neighbours().contains(&p(100)), "{q:?}");
    }
}

/// Crashed neighbours are detected (peer-down notices and keepalive timeouts) and replaced,
/// so the survivors return to their minimum degree.
#[test]
fn crashed_neighbours_are_replaced() {
    let config = flood::Config {
        min_degree: 3,
        max_degree: 6,
        ..flood::Config::default()
    };
    let mut s = sim(7);
    let n = 30;
    for i in 0..n {
        add(&mut s, i, &config);
    }
    for i in 0..n {
        link(&mut s, i, (i + 1) % n);
        link(&mut s, i, (i + 7) % n);
        link(&mut s, i, (i + 11) % n);
    }
    s.run_for(Duration::from_secs(5));
    for i in (0..n).step_by(5) {
        s.crash(p(i));
    }
    s.run_for(Duration::from_secs(300));
    for (peer, core) in s.cores() {
        let ns: Vec<PeerId> = core.neighbours().peers().collect();
        assert!(ns.len() >= 3, "{peer:?} has {} neighbours", ns.len());
        for q in ns {
            assert!(s.is_alive(&q), "{peer:?} still lists crashed {q:?}");
        }
    }
    let lost: u64 = s.cores().map(|(_, c)| c.counters().neighbours_lost).sum();
    assert!(
        lost >= 6 * 5,
        "every crashed node was noticed by its neighbours: {lost}"
    );
}
