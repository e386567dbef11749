//! Unit tests of the flooding core: one per Gnutella rule, each with a case a wrong
//! implementation fails. The core is driven directly, without the simulator.

use super::*;
use crate::{Context, Outbox, Output, Rng};

type Out = Output<Message, Timer, Event>;

fn p(n: u64) -> PeerId {
    PeerId::synthetic(n)
}

fn g(n: u8) -> Guid {
    Guid([n; 16])
}

fn terms(s: &str) -> Vec<String> {
    keywords(s).collect()
}

/// One core with its own clock, RNG and outbox.
struct Node {
    core: Flood,
    rng: Rng,
    out: Outbox<Message, Timer, Event>,
    now: Instant,
}

impl Node {
    fn new(config: Config) -> Node {
        Node {
            core: Flood::new(p(0), config).expect("valid config"),
            rng: Rng::seed(42),
            out: Outbox::new(),
            now: Instant::ZERO,
        }
    }

    /// A node with neighbours `1..=k`.
    fn with_neighbours(config: Config, k: u64) -> Node {
        let mut n = Node::new(config);
        n.cmd(Command::AddNeighbours((1..=k).map(p).collect()));
        n
    }

    fn drain(&mut self) -> Vec<Out> {
        self.out.drain().collect()
    }

    fn msg(&mut self, from: u64, msg: Message) -> Vec<Out> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_message(&mut cx, p(from), msg);
        self.drain()
    }

    fn cmd(&mut self, cmd: Command) -> Vec<Out> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_command(&mut cx, cmd);
        self.drain()
    }

    fn timer(&mut self, t: Timer) -> Vec<Out> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_timer(&mut cx, t);
        self.drain()
    }

    fn down(&mut self, peer: u64) -> Vec<Out> {
        let mut cx = Context::new(self.now, &mut self.rng, &mut self.out);
        self.core.handle_peer_down(&mut cx, p(peer));
        self.drain()
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
    }

    fn neighbours(&self) -> BTreeSet<PeerId> {
        self.core.neighbours().peers().collect()
    }
}

fn sends(outs: &[Out]) -> Vec<(PeerId, Message)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn events(outs: &[Out]) -> Vec<Event> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn query(guid: Guid, ttl: u8, hops: u8, t: &str) -> Message {
    Message::Query {
        guid,
        ttl,
        hops,
        terms: terms(t),
    }
}

fn queries_sent(outs: &[Out]) -> Vec<(PeerId, u8, u8)> {
    sends(outs)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Query { ttl, hops, .. } => Some((to, ttl, hops)),
            _ => None,
        })
        .collect()
}

fn set(ids: &[u64]) -> BTreeSet<PeerId> {
    ids.iter().map(|&n| p(n)).collect()
}

fn search(req: u64, t: &str, strategy: Strategy, ttl: Option<u8>) -> Command {
    Command::Search {
        req,
        terms: t.into(),
        strategy,
        ttl,
        want_hits: 1,
    }
}

// ----- Gnutella rules -----

#[test]
fn forward_decrements_ttl_and_increments_hops_and_skips_sender() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    let out = n.msg(1, query(g(1), 5, 2, "abbey road"));
    let q = queries_sent(&out);
    assert_eq!(
        q.len(),
        2,
        "forwarded to every neighbour but the sender: {q:?}"
    );
    for (to, ttl, hops) in q {
        assert_ne!(to, p(1));
        assert_eq!((ttl, hops), (4, 3));
    }
    assert_eq!(n.core.counters().queries_forwarded, 2);
}

#[test]
fn never_forwards_at_ttl_zero_but_still_answers() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    n.cmd(Command::Share {
        name: "Abbey Road.flac".into(),
    });
    // TTL 1 arrives, becomes 0 here: answered locally, not forwarded.
    let out = n.msg(1, query(g(1), 1, 0, "abbey"));
    assert!(queries_sent(&out).is_empty(), "{out:?}");
    let hits: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::QueryHit { .. }))
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, p(1));
    // A message that arrives with TTL 0 was sent against the rules: dropped entirely.
    let out = n.msg(2, query(g(2), 0, 3, "abbey"));
    assert!(sends(&out).is_empty(), "{out:?}");
    assert_eq!(n.core.counters().ttl_zero, 1);
    // Pings follow the same rule: a TTL-1 Ping is answered but not forwarded.
    let out = n.msg(
        1,
        Message::Ping {
            guid: g(3),
            ttl: 1,
            hops: 0,
        },
    );
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert!(matches!(s[0], (to, Message::Pong { .. }) if to == p(1)));
}

#[test]
fn duplicate_guid_is_dropped_per_type() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    assert_eq!(queries_sent(&n.msg(1, query(g(7), 4, 0, "x"))).len(), 2);
    // Same GUID again, from another neighbour and with a larger TTL: still a duplicate.
    let out = n.msg(2, query(g(7), 9, 0, "x"));
    assert!(sends(&out).is_empty(), "{out:?}");
    assert_eq!(n.core.counters().duplicate_queries, 1);
    // Duplicates are keyed by (type, GUID): a Ping with that GUID is new.
    let out = n.msg(
        2,
        Message::Ping {
            guid: g(7),
            ttl: 2,
            hops: 0,
        },
    );
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, Message::Pong { .. }))
    );
}

#[test]
fn seen_cache_is_bounded() {
    let config = Config {
        seen_capacity: 4,
        ..Config::default()
    };
    let mut n = Node::with_neighbours(config, 2);
    for i in 0..5 {
        assert_eq!(queries_sent(&n.msg(1, query(g(i), 3, 0, "x"))).len(), 1);
    }
    // g(0) was evicted by the fifth entry: it is forwarded again. An unbounded cache would
    // drop it as a duplicate.
    assert_eq!(queries_sent(&n.msg(1, query(g(0), 3, 0, "x"))).len(), 1);
    // g(4) is still remembered.
    assert!(queries_sent(&n.msg(1, query(g(4), 3, 0, "x"))).is_empty());
}

#[test]
fn seen_cache_expires() {
    let config = Config::default();
    let ttl = config.seen_ttl;
    let mut n = Node::with_neighbours(config, 2);
    assert_eq!(queries_sent(&n.msg(1, query(g(1), 3, 0, "x"))).len(), 1);
    n.advance(ttl - Duration::from_millis(1));
    assert!(
        queries_sent(&n.msg(1, query(g(1), 3, 0, "x"))).is_empty(),
        "still fresh"
    );
    n.advance(Duration::from_millis(1));
    assert_eq!(
        queries_sent(&n.msg(1, query(g(1), 3, 0, "x"))).len(),
        1,
        "expired GUIDs are new again"
    );
}

#[test]
fn query_hit_travels_back_only_along_the_reverse_path() {
    let mut n = Node::with_neighbours(Config::default(), 4);
    n.msg(3, query(g(9), 5, 1, "x"));
    let hit = Message::QueryHit {
        guid: g(9),
        ttl: 4,
        hops: 1,
        responder: p(77),
        names: vec!["x.txt".into()],
    };
    let out = n.msg(1, hit);
    let s = sends(&out);
    assert_eq!(s.len(), 1, "not flooded: {s:?}");
    match &s[0] {
        (
            to,
            Message::QueryHit {
                guid,
                ttl,
                hops,
                responder,
                ..
            },
        ) => {
            assert_eq!(*to, p(3), "back to the neighbour the Query came from");
            assert_eq!((*guid, *ttl, *hops, *responder), (g(9), 3, 2, p(77)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n.core.counters().hits_routed, 1);
}

#[test]
fn query_hit_for_unseen_query_is_dropped() {
    let mut n = Node::with_neighbours(Config::default(), 4);
    n.msg(3, query(g(9), 5, 1, "x"));
    let hit = Message::QueryHit {
        guid: g(10),
        ttl: 4,
        hops: 1,
        responder: p(77),
        names: vec!["x.txt".into()],
    };
    let out = n.msg(1, hit);
    assert!(sends(&out).is_empty(), "{out:?}");
    assert!(events(&out).is_empty());
    assert_eq!(n.core.counters().unroutable, 1);
}

#[test]
fn ttl_above_ten_is_clamped() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let q = queries_sent(&n.msg(1, query(g(1), 200, 0, "x")));
    assert_eq!(q, vec![(p(2), 9, 1)], "clamped to 10, then decremented");
    assert_eq!(n.core.counters().ttl_clamped, 1);
    let out = n.msg(
        1,
        Message::Ping {
            guid: g(2),
            ttl: 11,
            hops: 0,
        },
    );
    assert!(sends(&out).iter().any(|(to, m)| *to == p(2)
        && matches!(
            m,
            Message::Ping {
                ttl: 9,
                hops: 1,
                ..
            }
        )));
}

#[test]
fn new_query_ttl_defaults_to_seven_and_is_bounded() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    let q = queries_sent(&n.cmd(search(1, "abbey road", Strategy::Flood, None)));
    assert_eq!(q.len(), 3);
    assert!(
        q.iter()
            .all(|&(_, ttl, hops)| (ttl, hops) == (DEFAULT_TTL, 0))
    );
    assert_eq!(DEFAULT_TTL, 7);
    let out = n.cmd(search(2, "abbey", Strategy::Flood, Some(3)));
    assert!(queries_sent(&out).iter().all(|&(_, ttl, _)| ttl == 3));
    for bad in [0, 11] {
        let out = n.cmd(search(3, "abbey", Strategy::Flood, Some(bad)));
        assert!(sends(&out).is_empty());
        assert_eq!(
            events(&out),
            vec![Event::SearchRejected {
                req: 3,
                error: Error::BadTtl(bad)
            }]
        );
    }
}

#[test]
fn pong_is_routed_back_along_the_ping_path() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    let out = n.msg(
        1,
        Message::Ping {
            guid: g(5),
            ttl: 2,
            hops: 0,
        },
    );
    let s = sends(&out);
    // Our own Pong goes to the sender; the Ping goes on to the others with TTL 1.
    assert!(
        s.iter().any(|(to, m)| *to == p(1)
            && matches!(m, Message::Pong { peer, hops: 0, .. } if *peer == p(0)))
    );
    let pings: BTreeSet<PeerId> = s
        .iter()
        .filter(|(_, m)| {
            matches!(
                m,
                Message::Ping {
                    ttl: 1,
                    hops: 1,
                    ..
                }
            )
        })
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(pings, set(&[2, 3]));
    // A Pong from 2 naming peer 50 goes back to 1 only.
    let pong = Message::Pong {
        guid: g(5),
        ttl: 3,
        hops: 0,
        peer: p(50),
        shared: 4,
    };
    let s = sends(&n.msg(2, pong.clone()));
    assert_eq!(
        s,
        vec![(
            p(1),
            Message::Pong {
                guid: g(5),
                ttl: 2,
                hops: 1,
                peer: p(50),
                shared: 4
            }
        )]
    );
    // A Pong for a Ping never seen is dropped.
    let stray = Message::Pong {
        guid: g(6),
        ttl: 3,
        hops: 0,
        peer: p(51),
        shared: 0,
    };
    assert!(sends(&n.msg(2, stray)).is_empty());
    assert_eq!(n.core.counters().unroutable, 1);
}

#[test]
fn originator_connects_to_hosts_learned_from_pongs() {
    let config = Config {
        min_degree: 3,
        ..Config::default()
    };
    let mut n = Node::with_neighbours(config.clone(), 2);
    n.advance(Duration::from_secs(1));
    // Below the minimum with no cached host: the tick sends a discovery Ping to everyone.
    let out = n.timer(Timer::Tick);
    let pings: Vec<(PeerId, Guid, u8)> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Ping { guid, ttl, .. } => Some((to, guid, ttl)),
            _ => None,
        })
        .collect();
    assert_eq!(pings.len(), 2);
    assert!(pings.iter().all(|&(_, _, ttl)| ttl == config.discovery_ttl));
    let guid = pings[0].1;
    let out = n.msg(
        1,
        Message::Pong {
            guid,
            ttl: 1,
            hops: 1,
            peer: p(60),
            shared: 0,
        },
    );
    assert_eq!(n.neighbours(), set(&[1, 2, 60]));
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == p(60) && matches!(m, Message::Ping { ttl: 1, .. }))
    );
    // The new link is unconfirmed until 60 answers; silent, it is given up quickly.
    n.advance(config.connect_timeout);
    n.timer(Timer::Tick);
    assert!(!n.neighbours().contains(&p(60)));
}

#[test]
fn lost_neighbour_is_replaced_from_the_host_cache() {
    let config = Config {
        min_degree: 2,
        max_degree: 2,
        ..Config::default()
    };
    let mut n = Node::new(config);
    n.cmd(Command::AddNeighbours(vec![p(1), p(2), p(3), p(4)]));
    assert_eq!(n.neighbours(), set(&[1, 2]), "bounded by max_degree");
    assert_eq!(
        n.core.neighbours().hosts_len(),
        2,
        "the rest are candidates"
    );
    let out = n.down(1);
    assert_eq!(n.neighbours().len(), 2, "replaced at once");
    assert!(!n.neighbours().contains(&p(1)));
    let new = *n.neighbours().difference(&set(&[2])).next().unwrap();
    assert!(new == p(3) || new == p(4));
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == new && matches!(m, Message::Ping { .. }))
    );
    // A Bye works the same way.
    n.msg(2, Message::Bye);
    assert!(!n.neighbours().contains(&p(2)));
    assert_eq!(n.neighbours().len(), 2);
    assert_eq!(n.core.counters().neighbours_lost, 2);
}

#[test]
fn silent_neighbour_is_pinged_then_dropped_and_replaced() {
    let config = Config {
        min_degree: 2,
        max_degree: 2,
        ..Config::default()
    };
    let (keepalive, timeout) = (config.keepalive_interval, config.neighbour_timeout);
    let mut n = Node::new(config);
    n.cmd(Command::AddNeighbours(vec![p(1), p(2), p(3)]));
    n.advance(keepalive);
    let out = n.timer(Timer::Tick);
    let pinged: BTreeSet<PeerId> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Ping { ttl: 1, .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(pinged, set(&[1, 2]), "quiet neighbours get a keepalive");
    // 2 answers, 1 stays silent.
    let guid = match &sends(&out)[0].1 {
        Message::Ping { guid, .. } => *guid,
        m => panic!("{m:?}"),
    };
    n.msg(
        2,
        Message::Pong {
            guid,
            ttl: 1,
            hops: 0,
            peer: p(2),
            shared: 0,
        },
    );
    n.advance(timeout - keepalive);
    n.timer(Timer::Tick);
    assert_eq!(
        n.neighbours(),
        set(&[2, 3]),
        "1 timed out and 3 took its place"
    );
}

#[test]
fn strangers_are_adopted_while_there_is_room_then_refused() {
    let config = Config {
        min_degree: 1,
        max_degree: 2,
        ..Config::default()
    };
    let mut n = Node::with_neighbours(config, 1);
    n.msg(5, query(g(1), 2, 0, "x"));
    assert_eq!(n.neighbours(), set(&[1, 5]));
    let out = n.msg(6, query(g(2), 2, 0, "x"));
    assert_eq!(
        sends(&out),
        vec![(p(6), Message::Bye)],
        "full: refused, not forwarded"
    );
    assert_eq!(n.core.counters().refused_peers, 1);
}

// ----- searches -----

#[test]
fn flood_search_reports_hits_and_finishes_at_its_deadline() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let out = n.cmd(search(7, "abbey road", Strategy::Flood, Some(3)));
    let guid = match &sends(&out)[0].1 {
        Message::Query { guid, terms, .. } => {
            assert_eq!(terms, &vec!["abbey".to_string(), "road".to_string()]);
            *guid
        }
        m => panic!("{m:?}"),
    };
    let deadline = out
        .iter()
        .find_map(|o| match o {
            Output::Timer { at, timer } => Some((*at, *timer)),
            _ => None,
        })
        .unwrap();
    assert_eq!(deadline.0, Instant::ZERO + Config::default().hop_wait * 6);
    let hit = |responder, hops| Message::QueryHit {
        guid,
        ttl: 2,
        hops,
        responder,
        names: vec!["Abbey Road.flac".into()],
    };
    let ev = events(&n.msg(1, hit(p(20), 2)));
    assert_eq!(
        ev,
        vec![Event::SearchHit {
            req: 7,
            responder: p(20),
            names: vec!["Abbey Road.flac".into()],
            hops: 3
        }]
    );
    assert!(
        events(&n.msg(2, hit(p(20), 0))).is_empty(),
        "one hit per responder"
    );
    n.msg(2, hit(p(21), 0));
    let ev = events(&n.timer(deadline.1));
    assert_eq!(
        ev,
        vec![Event::SearchDone {
            req: 7,
            hits: 2,
            first_hit_hops: Some(1),
            rings: 1
        }]
    );
    assert_eq!(n.core.active_searches(), 0);
    assert!(
        events(&n.msg(1, hit(p(22), 0))).is_empty(),
        "late hits are ignored"
    );
    assert_eq!(n.core.counters().late_hits, 1);
}

#[test]
fn expanding_ring_doubles_ttl_until_a_hit() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let ring_guid = |out: &[Out]| -> (Guid, u8) {
        match &sends(out)[0].1 {
            Message::Query { guid, ttl, .. } => (*guid, *ttl),
            m => panic!("{m:?}"),
        }
    };
    let out = n.cmd(search(1, "x", Strategy::ExpandingRing, Some(7)));
    let (g0, t0) = ring_guid(&out);
    assert_eq!(t0, 1);
    let out = n.timer(Timer::Deadline { req: 1, ring: 0 });
    let (g1, t1) = ring_guid(&out);
    assert_eq!(t1, 2);
    assert_ne!(g0, g1, "each ring is a new query");
    // A stale deadline (ring 0 again) changes nothing.
    assert!(n.timer(Timer::Deadline { req: 1, ring: 0 }).is_empty());
    let out = n.timer(Timer::Deadline { req: 1, ring: 1 });
    let (g2, t2) = ring_guid(&out);
    assert_eq!(t2, 4);
    n.msg(
        1,
        Message::QueryHit {
            guid: g2,
            ttl: 4,
            hops: 2,
            responder: p(30),
            names: vec!["x".into()],
        },
    );
    let ev = events(&n.timer(Timer::Deadline { req: 1, ring: 2 }));
    assert_eq!(
        ev,
        vec![Event::SearchDone {
            req: 1,
            hits: 1,
            first_hit_hops: Some(3),
            rings: 3
        }]
    );
    // Without hits the rings stop at the search's TTL.
    n.cmd(search(2, "y", Strategy::ExpandingRing, Some(3)));
    let t = ring_guid(&n.timer(Timer::Deadline { req: 2, ring: 0 })).1;
    assert_eq!(t, 2);
    let t = ring_guid(&n.timer(Timer::Deadline { req: 2, ring: 1 })).1;
    assert_eq!(t, 3, "capped at the search's TTL");
    let ev = events(&n.timer(Timer::Deadline { req: 2, ring: 2 }));
    assert!(matches!(
        ev[..],
        [Event::SearchDone {
            hits: 0,
            rings: 3,
            ..
        }]
    ));
}

#[test]
fn random_walk_steps_checks_back_and_reports_to_origin() {
    let mut n = Node::with_neighbours(Config::default(), 3);
    n.cmd(Command::Share {
        name: "rare item.ogg".into(),
    });
    let origin = p(99);
    let walk = |hops, steps_left| Message::Walk {
        guid: g(4),
        walker: 0,
        steps_left,
        hops,
        origin,
        terms: terms("rare item"),
    };
    // First visit: hit straight to the origin, walker goes on to a neighbour other than 1.
    let s = sends(&n.msg(1, walk(0, 100)));
    assert!(s.contains(&(
        origin,
        Message::WalkHit {
            guid: g(4),
            hops: 1,
            names: vec!["rare item.ogg".into()]
        }
    )));
    let steps: Vec<_> = s
        .iter()
        .filter(|(_, m)| matches!(m, Message::Walk { .. }))
        .collect();
    assert_eq!(steps.len(), 1);
    assert_ne!(steps[0].0, p(1));
    assert!(matches!(
        steps[0].1,
        Message::Walk {
            hops: 1,
            steps_left: 99,
            ..
        }
    ));
    // Revisit: no second hit; the walker prefers the neighbour it has not used yet.
    let first = steps[0].0;
    let s = sends(&n.msg(1, walk(1, 50)));
    assert!(!s.iter().any(|(_, m)| matches!(m, Message::WalkHit { .. })));
    assert!(s.iter().all(|(to, _)| *to != first && *to != p(1)), "{s:?}");
    assert_eq!(n.core.counters().walk_revisits, 1);
    // At a multiple of walk_check_every steps the walker parks and asks the origin.
    let s = sends(&n.msg(2, walk(3, 50)));
    assert_eq!(
        s,
        vec![(
            origin,
            Message::WalkCheck {
                guid: g(4),
                walker: 0
            }
        )]
    );
    // Only the origin's verdict moves it.
    let forged = Message::WalkVerdict {
        guid: g(4),
        walker: 0,
        go: true,
    };
    assert!(sends(&n.msg(5, forged.clone())).is_empty());
    assert_eq!(n.core.counters().walk_unknown, 1);
    let s = sends(&n.msg(99, forged));
    assert!(matches!(
        s[..],
        [(
            _,
            Message::Walk {
                hops: 4,
                steps_left: 49,
                ..
            }
        )]
    ));
    // A walker out of steps ends here.
    let s = sends(&n.msg(1, walk(9, 1)));
    assert!(s.is_empty(), "{s:?}");
}

#[test]
fn walk_origin_answers_check_backs_until_satisfied() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let out = n.cmd(search(
        3,
        "rare",
        Strategy::RandomWalk {
            walkers: 4,
            steps: 64,
        },
        None,
    ));
    let walks: Vec<_> = sends(&out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Walk {
                guid,
                walker,
                steps_left,
                origin,
                ..
            } => Some((to, guid, walker, steps_left, origin)),
            _ => None,
        })
        .collect();
    assert_eq!(walks.len(), 4);
    assert!(walks.iter().all(|w| w.3 == 64 && w.4 == p(0)));
    let walkers: BTreeSet<u16> = walks.iter().map(|w| w.2).collect();
    assert_eq!(walkers.len(), 4);
    let guid = walks[0].1;
    let verdict = |out: &[Out]| match &sends(out)[..] {
        [(_, Message::WalkVerdict { go, .. })] => *go,
        s => panic!("{s:?}"),
    };
    assert!(verdict(&n.msg(40, Message::WalkCheck { guid, walker: 1 })));
    let out = n.msg(
        41,
        Message::WalkHit {
            guid,
            hops: 12,
            names: vec!["rare".into()],
        },
    );
    let ev = events(&out);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(
        ev[1],
        Event::SearchDone {
            req: 3,
            hits: 1,
            first_hit_hops: Some(12),
            ..
        }
    ));
    assert!(
        !verdict(&n.msg(40, Message::WalkCheck { guid, walker: 1 })),
        "satisfied: stop"
    );
    assert!(
        !verdict(&n.msg(
            40,
            Message::WalkCheck {
                guid: g(1),
                walker: 1
            }
        )),
        "unknown: stop"
    );
}

#[test]
fn bad_commands_are_rejected_without_traffic() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let many_terms: String = (0..=MAX_TERMS).map(|i| format!("w{i} ")).collect();
    let cases = [
        (search(1, "  --  ", Strategy::Flood, None), Error::NoTerms),
        (
            search(
                1,
                "x",
                Strategy::RandomWalk {
                    walkers: 0,
                    steps: 10,
                },
                None,
            ),
            Error::BadWalkers(0),
        ),
        (
            search(
                1,
                "x",
                Strategy::RandomWalk {
                    walkers: 2,
                    steps: 5000,
                },
                None,
            ),
            Error::BadWalkSteps {
                got: 5000,
                max: 1024,
            },
        ),
        (
            search(1, &many_terms, Strategy::Flood, None),
            Error::TooManyTerms(MAX_TERMS + 1),
        ),
    ];
    for (cmd, error) in cases {
        let out = n.cmd(cmd);
        assert!(sends(&out).is_empty());
        assert_eq!(events(&out), vec![Event::SearchRejected { req: 1, error }]);
    }
    n.cmd(search(1, "x", Strategy::Flood, None));
    let out = n.cmd(search(1, "y", Strategy::Flood, None));
    assert_eq!(
        events(&out),
        vec![Event::SearchRejected {
            req: 1,
            error: Error::DuplicateRequest(1)
        }]
    );
    let out = n.cmd(Command::Share { name: "!!".into() });
    assert!(matches!(events(&out)[..], [Event::ShareRejected { .. }]));
}

#[test]
fn malformed_network_input_is_counted_not_fatal() {
    let mut n = Node::with_neighbours(Config::default(), 2);
    let long = "k".repeat(MAX_TERM_LEN + 1);
    let out = n.msg(
        1,
        Message::Query {
            guid: g(1),
            ttl: 3,
            hops: 0,
            terms: vec![long],
        },
    );
    assert!(sends(&out).is_empty());
    let out = n.msg(
        1,
        Message::Query {
            guid: g(2),
            ttl: 3,
            hops: 0,
            terms: vec![],
        },
    );
    assert!(sends(&out).is_empty());
    assert_eq!(n.core.counters().malformed, 2);
    // Arbitrary bytes never decode into a panic.
    for len in 0..64u8 {
        let junk: Vec<u8> = (0..len)
            .map(|i| i.wrapping_mul(37).wrapping_add(len))
            .collect();
        let _ = crate::codec::decode::<Message>(&junk);
    }
    let m = query(g(3), 7, 0, "abbey road");
    let back: Message = crate::codec::decode(&crate::codec::encode(&m).unwrap()).unwrap();
    assert_eq!(back, m);
}

#[test]
fn config_bounds_are_checked() {
    assert!(Config::default().validate().is_ok());
    let bad = [
        Config {
            min_degree: 9,
            ..Config::default()
        },
        Config {
            max_degree: 0,
            ..Config::default()
        },
        Config {
            seen_capacity: 0,
            ..Config::default()
        },
        Config {
            neighbour_timeout: Duration::from_secs(30),
            ..Config::default()
        },
        Config {
            seen_ttl: Duration::from_secs(1),
            ..Config::default()
        },
        Config {
            walk_check_every: 0,
            ..Config::default()
        },
    ];
    for c in bad {
        assert!(Flood::new(p(0), c).is_err());
    }
}

#[test]
fn hosts_are_connected_with_a_hello_up_to_min_degree_only() {
    let config = Config {
        min_degree: 3,
        max_degree: 6,
        ..Config::default()
    };
    let mut n = Node::new(config);
    let out = n.cmd(Command::AddHosts((1..=10).map(p).collect()));
    let hellos: BTreeSet<PeerId> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Ping { ttl: 1, .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(
        hellos.len(),
        3,
        "one hello per link up to min_degree, not max"
    );
    assert_eq!(n.neighbours(), hellos);
    assert!(
        n.neighbours()
            .iter()
            .all(|q| !n.core.neighbours().get(q).unwrap().confirmed),
        "a link is confirmed by the host's answer, not assumed"
    );
    assert_eq!(n.core.neighbours().hosts_len(), 7);
    // A full host refuses: another candidate takes its place.
    let refused = *hellos.iter().next().unwrap();
    let k = (1..=10).find(|&k| p(k) == refused).unwrap();
    let out = n.msg(k, Message::Bye);
    assert_eq!(n.neighbours().len(), 3);
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| !hellos.contains(to) && matches!(m, Message::Ping { ttl: 1, .. })),
        "the replacement gets its own hello"
    );
    assert!(!n.neighbours().contains(&refused));
}
