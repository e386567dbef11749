//! Unit tests: each rule driven directly through the sans-IO interface.

use std::num::NonZeroU32;

use peerlab_overlay::{Context, Outbox, Output, Rng};
use peerlab_sim::testing::Net;
use proptest::prelude::*;
use serde_bytes::ByteBuf;

use super::*;

mod budget;
mod group;
mod health;
mod trust;

type Out = Output<Message, Timer, Event>;

fn p(n: u64) -> PeerId {
    PeerId::synthetic(n)
}

fn k(n: u64) -> Keypair {
    Keypair::synthetic(n)
}

/// Feeds one input to `g` at time `now_ms` and returns what it produced.
fn run(g: &mut Gossip, now_ms: u64, f: impl FnOnce(&mut Gossip, &mut Cx<'_, Gossip>)) -> Vec<Out> {
    let mut rng = Rng::seed(now_ms ^ 0x5eed);
    let mut out = Outbox::new();
    let mut cx = Context::new(Instant(now_ms * 1000), &mut rng, &mut out);
    f(g, &mut cx);
    out.drain().collect()
}

fn sends(out: &[Out]) -> Vec<(PeerId, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn events(out: &[Out]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn view(n: u64) -> StaticView {
    StaticView::new((0..n).map(p).collect())
}

/// The variant tests count rounds: pushes happen at ticks only (no eager push), and the
/// variant alone decides when a rumor is dropped (no minimum budget).
fn cfg(mode: Mode, variant: Variant, k: u32) -> Config {
    Config {
        mode,
        variant,
        k: NonZeroU32::new(k).unwrap(),
        fanout: 1,
        eager_push: false,
        data_retransmit_mult: 0,
        ..Config::lan()
    }
}

fn static_node(n: u64, me: u64, config: Config) -> Gossip {
    Gossip::with_static_view(k(me), view(n), config).unwrap()
}

fn publish(g: &mut Gossip, key: &str, value: &[u8]) -> u64 {
    let out = run(g, 0, |g, cx| {
        g.handle_command(
            cx,
            Command::Publish {
                req: 7,
                key: key.into(),
                value: value.into(),
            },
        )
    });
    events(&out)
        .iter()
        .find_map(|e| match e {
            Event::Published { req: 7, version } => Some(*version),
            _ => None,
        })
        .expect("published")
}

fn tick(g: &mut Gossip, now_ms: u64) -> Vec<Out> {
    run(g, now_ms, |g, cx| g.handle_timer(cx, Timer::Tick))
}

/// The `Gossip` pushes a tick produced, with their sequence numbers.
fn pushes(out: &[Out]) -> Vec<(PeerId, u64, Vec<Entry>)> {
    sends(out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::Gossip { seq, entries, .. } if !entries.is_empty() => Some((to, seq, entries)),
            _ => None,
        })
        .collect()
}

fn entry(origin: u64, key: &str, version: u64, value: &[u8]) -> Entry {
    Entry {
        origin: p(origin),
        key: key.into(),
        version,
        value: Some(ByteBuf::from(value.to_vec())),
    }
}

fn gossip_msg(entries: Vec<Entry>) -> Message {
    Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![],
        entries,
    }
}

#[test]
fn presets_are_valid_and_bad_configs_are_refused() {
    for c in [
        Config::lan(),
        Config::wan(),
        Config::synchronous_rounds(Mode::Rumor),
    ] {
        assert_eq!(c.validate(), Ok(()));
    }
    let bad = [
        Config {
            fanout: 0,
            ..Config::lan()
        },
        Config {
            probe_timeout: Duration::from_secs(2),
            ..Config::lan()
        },
        Config {
            max_message_bytes: 8 * 1024,
            ..Config::lan()
        },
        Config {
            period: Duration::ZERO,
            ..Config::lan()
        },
    ];
    for c in bad {
        assert!(matches!(
            Gossip::new(k(1), vec![], c),
            Err(Error::Config(_))
        ));
    }
    assert_eq!(Config::lan().member_retransmits(999), 12);
    assert_eq!(Config::lan().member_retransmits(1000), 16);
}

// ---- loss of interest, one test per variant ----

#[test]
fn a_fresh_rumor_is_pushed_at_once_and_only_once_per_round() {
    let config = Config {
        eager_push: true,
        ..cfg(Mode::Combined, Variant::FeedbackCounter, 3)
    };
    let mut g = static_node(10, 0, config.clone());
    // Published: pushed at once, without waiting for the round.
    let out = run(&mut g, 0, |g, cx| {
        g.handle_command(
            cx,
            Command::Publish {
                req: 1,
                key: "a".into(),
                value: b"1".to_vec(),
            },
        )
    });
    assert_eq!(pushes(&out).len(), 1, "a publication is pushed at once");
    // A second publication in the same round waits for the round.
    let out = run(&mut g, 1, |g, cx| {
        g.handle_command(
            cx,
            Command::Publish {
                req: 2,
                key: "b".into(),
                value: b"2".to_vec(),
            },
        )
    });
    assert!(pushes(&out).is_empty(), "one eager push per round");
    // Received in a push: forwarded at once, only what was new.
    let mut h = static_node(10, 1, config);
    let out = run(&mut h, 0, |h, cx| {
        h.handle_message(cx, p(2), gossip_msg(vec![entry(3, "k", 1, b"v")]))
    });
    let forwarded = pushes(&out);
    assert_eq!(forwarded.len(), 1, "a fresh rumor is forwarded at once");
    assert_eq!(forwarded[0].2.len(), 1);
    let out = run(&mut h, 1, |h, cx| {
        h.handle_message(cx, p(4), gossip_msg(vec![entry(3, "k", 1, b"v")]))
    });
    assert!(pushes(&out).is_empty(), "a known rumor is not pushed again");
}

#[test]
fn blind_counter_pushes_exactly_k_rounds() {
    let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::BlindCounter, 3));
    publish(&mut g, "a", b"1");
    let mut rounds = 0;
    for t in 1..10 {
        if !pushes(&tick(&mut g, t * 200)).is_empty() {
            rounds += 1;
        }
    }
    assert_eq!(rounds, 3);
    assert_eq!(g.hot_data_rumors(), 0);
}

#[test]
fn blind_coin_with_k_1_pushes_once() {
    let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::BlindCoin, 1));
    publish(&mut g, "a", b"1");
    assert_eq!(pushes(&tick(&mut g, 200)).len(), 1);
    assert_eq!(g.hot_data_rumors(), 0);
    assert!(pushes(&tick(&mut g, 400)).is_empty());
}

#[test]
fn blind_coin_loses_interest_at_rate_one_over_k() {
    // Mean number of push rounds of a coin with probability 1/k is k.
    let mut total = 0;
    for seed in 0..400u64 {
        let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::BlindCoin, 4));
        publish(&mut g, "a", b"1");
        for t in 1..200 {
            if pushes(&tick(&mut g, seed * 10_000 + t)).is_empty() {
                break;
            }
            total += 1;
        }
    }
    let mean = total as f64 / 400.0;
    assert!((3.4..4.6).contains(&mean), "mean rounds {mean}");
}

fn reply(g: &mut Gossip, seq: u64, known: bool) {
    run(g, 1, |g, cx| {
        g.handle_message(
            cx,
            p(5),
            Message::GossipReply {
                seq,
                known: vec![known],
            },
        )
    });
}

#[test]
fn feedback_counter_counts_consecutive_unnecessary_contacts() {
    let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::FeedbackCounter, 2));
    publish(&mut g, "a", b"1");
    let mut t = 0;
    let mut next = |g: &mut Gossip| {
        t += 200;
        let out = tick(g, t);
        let ps = pushes(&out);
        assert_eq!(ps.len(), 1);
        ps[0].1
    };
    // known, useful (reset), known: still hot; a second consecutive known ends it.
    let s = next(&mut g);
    reply(&mut g, s, true);
    let s = next(&mut g);
    reply(&mut g, s, false);
    let s = next(&mut g);
    reply(&mut g, s, true);
    assert_eq!(g.hot_data_rumors(), 1);
    let s = next(&mut g);
    reply(&mut g, s, true);
    assert_eq!(g.hot_data_rumors(), 0);
}

#[test]
fn a_data_rumor_gets_memberlists_transmission_budget_before_it_may_be_dropped() {
    let config = Config {
        data_retransmit_mult: 4,
        ..cfg(Mode::Rumor, Variant::FeedbackCounter, 1)
    };
    // 10 members: 4 · ⌈log10(11)⌉ = 8 transmissions (fan-out 1: one per round).
    assert_eq!(config.data_retransmits(10), 8);
    let mut g = static_node(10, 0, config);
    publish(&mut g, "a", b"1");
    let mut pushed = 0;
    for t in 1..20 {
        let ps = pushes(&tick(&mut g, t * 200));
        if ps.is_empty() {
            break;
        }
        pushed += 1;
        // Every contact already knew it: with k = 1 the variant alone drops it at once.
        reply(&mut g, ps[0].1, true);
    }
    assert_eq!(pushed, 8, "pushed until the budget was spent, then dropped");
    assert_eq!(g.hot_data_rumors(), 0);
}

#[test]
fn feedback_coin_only_unnecessary_contacts_flip_the_coin() {
    let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::FeedbackCoin, 1));
    publish(&mut g, "a", b"1");
    for t in 1..20 {
        let ps = pushes(&tick(&mut g, t * 200));
        reply(&mut g, ps[0].1, false);
    }
    assert_eq!(
        g.hot_data_rumors(),
        1,
        "useful contacts never end a feedback rumor"
    );
    let ps = pushes(&tick(&mut g, 5000));
    reply(&mut g, ps[0].1, true);
    assert_eq!(g.hot_data_rumors(), 0, "coin of probability 1/1");
}

#[test]
fn receiver_reports_what_it_knew() {
    let mut g = static_node(10, 1, cfg(Mode::Rumor, Variant::FeedbackCounter, 2));
    let msg = Message::Gossip {
        seq: 9,
        feedback: true,
        members: vec![],
        entries: vec![entry(3, "x", 1, b"v")],
    };
    let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(3), msg.clone()));
    assert!(sends(&out).contains(&(
        p(3),
        Message::GossipReply {
            seq: 9,
            known: vec![false]
        }
    )));
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(4), msg.clone()));
    assert!(sends(&out).contains(&(
        p(4),
        Message::GossipReply {
            seq: 9,
            known: vec![true]
        }
    )));
}

#[test]
fn anti_entropy_mode_makes_no_rumors_and_rumor_mode_no_syn() {
    let mut g = static_node(10, 0, cfg(Mode::AntiEntropy, Variant::BlindCounter, 1));
    publish(&mut g, "a", b"1");
    assert_eq!(g.hot_rumors(), 0);
    let mut h = static_node(10, 0, cfg(Mode::Rumor, Variant::BlindCounter, 1));
    for t in 1..20 {
        let out = tick(&mut h, t * 200);
        assert!(
            sends(&out)
                .iter()
                .all(|(_, m)| !matches!(m, Message::Syn { .. }))
        );
    }
}

// ---- cycle-end activation ----

#[test]
fn cycle_end_activates_at_the_next_tick() {
    let mut g = static_node(10, 1, Config::synchronous_rounds(Mode::Rumor));
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(3, "x", 1, b"v")]))
    });
    assert!(!g.knows(&p(3), "x", 1));
    assert_eq!(g.pending(), 1);
    let out = tick(&mut g, 200);
    assert!(g.knows(&p(3), "x", 1));
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::EntryUpdated { version: 1, .. }))
    );
    assert_eq!(
        pushes(&out).len(),
        3,
        "activated rumors are pushed in the same tick"
    );
}

#[test]
fn synchronous_ticks_align_to_the_period() {
    let mut g = static_node(10, 1, Config::synchronous_rounds(Mode::Rumor));
    let out = run(&mut g, 130, |g, cx| g.handle_start(cx));
    assert!(out.contains(&Output::Timer {
        at: Instant(200_000),
        timer: Timer::Tick
    }));
}

// ---- versions, deltas, digests ----

#[test]
fn older_versions_never_replace_newer_ones() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    let apply = |g: &mut Gossip, e: Entry| {
        run(g, 1, |g, cx| {
            g.handle_message(cx, p(3), gossip_msg(vec![e]))
        });
    };
    apply(&mut g, entry(3, "x", 2, b"new"));
    apply(&mut g, entry(3, "x", 1, b"old"));
    assert_eq!(
        g.entry(&p(3), "x").unwrap().value.as_deref(),
        Some(&b"new"[..])
    );
    // Out of order: version 2 held, 1 superseded; the watermark waits for anti-entropy.
    assert_eq!(g.versions().find(|(o, _)| **o == p(3)).unwrap().1, 0);
    apply(&mut g, entry(3, "y", 3, b"y"));
    let d = OriginDelta {
        origin: p(3),
        from: 0,
        to: 3,
        entries: vec![],
    };
    run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(4), Message::Delta { deltas: vec![d] })
    });
    assert_eq!(g.versions().find(|(o, _)| **o == p(3)).unwrap().1, 3);
}

#[test]
fn contiguous_rumors_advance_the_watermark() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    for (v, k) in [(2, "b"), (1, "a"), (3, "c")] {
        run(&mut g, 1, |g, cx| {
            g.handle_message(cx, p(3), gossip_msg(vec![entry(3, k, v, b"")]))
        });
    }
    assert_eq!(g.versions().find(|(o, _)| **o == p(3)).unwrap().1, 3);
}

#[test]
fn deletes_spread_as_tombstones_and_are_not_resurrected() {
    let mut a = static_node(10, 0, cfg(Mode::Combined, Variant::BlindCounter, 1));
    let b = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    publish(&mut a, "k", b"v");
    let out = run(&mut a, 1, |g, cx| {
        g.handle_command(
            cx,
            Command::Delete {
                req: 8,
                key: "k".into(),
            },
        )
    });
    assert!(events(&out).contains(&Event::Published { req: 8, version: 2 }));
    // Deleting again: nothing to delete.
    let out = run(&mut a, 1, |g, cx| {
        g.handle_command(
            cx,
            Command::Delete {
                req: 9,
                key: "k".into(),
            },
        )
    });
    assert!(events(&out).contains(&Event::CommandFailed {
        req: 9,
        error: Error::NotFound
    }));
    let mut net = pair(a, b);
    reconcile(&mut net, p(1), p(0), Exchange::Pull, 1 << 16);
    let mut b = net.crash(p(1)).unwrap();
    assert_eq!(
        b.entry(&p(0), "k"),
        Some(&StoredEntry {
            version: 2,
            value: None
        })
    );
    // The old publish arriving late changes nothing.
    run(&mut b, 5, |g, cx| {
        g.handle_message(cx, p(7), gossip_msg(vec![entry(0, "k", 1, b"v")]))
    });
    assert_eq!(b.entry(&p(0), "k").unwrap().value, None);
}

/// Two cores in a [`Net`], to let them talk.
fn pair(a: Gossip, b: Gossip) -> Net<Gossip> {
    let mut net = Net::new(1);
    net.add(a.id(), a);
    net.add(b.id(), b);
    net
}

/// One anti-entropy exchange from `a` (initiator) to `b`, delivering every message; every
/// message between them must fit `budget`.
fn reconcile(net: &mut Net<Gossip>, a: PeerId, b: PeerId, exchange: Exchange, budget: usize) {
    for peer in [a, b] {
        net.node_mut(&peer).config.max_message_bytes = budget;
    }
    net.node_mut(&a).config.exchange = exchange;
    let digest = net.node(&a).store.digest(budget, &mut Rng::seed(1));
    net.set_tap(move |sent| {
        assert!((sent.from, sent.to) == (a, b) || (sent.from, sent.to) == (b, a));
        assert!(
            peerlab_overlay::codec::encoded_len(&sent.msg) <= budget,
            "over budget"
        );
        Vec::new()
    });
    net.deliver(a, b, Message::Syn { exchange, digest });
    net.drive();
}

fn watermark(g: &Gossip, origin: u64) -> u64 {
    g.versions()
        .find(|(o, _)| **o == p(origin))
        .map_or(0, |(_, v)| v)
}

#[test]
fn deltas_respect_the_budget_and_send_prefixes() {
    for exchange in [Exchange::Push, Exchange::Pull, Exchange::PushPull] {
        let mut a = static_node(10, 0, cfg(Mode::AntiEntropy, Variant::BlindCounter, 1));
        let mut b = static_node(10, 1, cfg(Mode::AntiEntropy, Variant::BlindCounter, 1));
        for i in 0..60 {
            publish(&mut a, &format!("k{i}"), &[i as u8; 500]);
        }
        for i in 0..60 {
            publish(&mut b, &format!("j{i}"), &[i as u8; 500]);
        }
        let (mut rounds, budget) = (0, 8 * 1024);
        let mut net = pair(a, b);
        let marks =
            |net: &Net<Gossip>| (watermark(net.node(&p(0)), 1), watermark(net.node(&p(1)), 0));
        while marks(&net) != (60, 60) {
            let (a_before, b_before) = marks(&net);
            reconcile(&mut net, p(0), p(1), exchange, budget);
            rounds += 1;
            // Never a newer version without every older one: the watermark equals what is held.
            for (g, origin) in [(net.node(&p(1)), 0), (net.node(&p(0)), 1)] {
                let w = watermark(g, origin);
                assert_eq!(
                    g.entries(&p(origin))
                        .filter(|(_, e)| e.version <= w)
                        .count() as u64,
                    w
                );
                assert_eq!(g.entries(&p(origin)).count() as u64, w);
            }
            let (a_mark, b_mark) = marks(&net);
            if exchange == Exchange::Push {
                assert_eq!(a_mark, 0);
                if b_mark == 60 {
                    break;
                }
            }
            if exchange == Exchange::Pull {
                assert_eq!(b_mark, 0);
                if a_mark == 60 {
                    break;
                }
            }
            assert!(a_mark > a_before || b_mark > b_before || rounds > 1);
            assert!(rounds < 40, "no progress");
        }
        assert!(
            rounds >= 3,
            "{exchange:?}: 30 KB cannot cross an 8 KiB budget at once"
        );
    }
}

#[test]
fn digest_within_budget_is_a_random_subset() {
    let mut g = static_node(3000, 0, cfg(Mode::AntiEntropy, Variant::BlindCounter, 1));
    for o in 1..2000 {
        let budget = g.config.data_budget();
        g.store
            .apply(p(o), "k", 1, None, &g.config.clone(), &p(0), budget)
            .unwrap();
    }
    let d = g.store.digest(4096, &mut Rng::seed(3));
    assert!(!d.complete);
    assert!(!d.versions.is_empty());
    assert!(peerlab_overlay::codec::encoded_len(&d) <= 4096);
    let full = g.store.digest(1 << 20, &mut Rng::seed(3));
    assert!(full.complete);
    assert_eq!(full.versions.len(), 1999);
}

// ---- bad input ----

#[test]
fn unknown_origins_are_rejected_and_counted() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(99, "x", 1, b"v")]))
    });
    let d = OriginDelta {
        origin: p(98),
        from: 0,
        to: 1,
        entries: vec![("x".into(), 1, None)],
    };
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), Message::Delta { deltas: vec![d] })
    });
    assert_eq!(g.rejected().unknown_origin, 2);
    assert_eq!(g.entry(&p(99), "x"), None);
    assert_eq!(g.versions().count(), 0);
}

#[test]
fn absurd_versions_are_rejected_and_do_not_block_newer_ones() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    let bad = [
        entry(3, "x", 0, b"zero"),
        entry(3, "x", MAX_VERSION + 1, b"huge"),
        entry(3, "x", (1 << 32) + 5, b"jump"),
        entry(1, "mine", 1, b"forged"),
    ];
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(bad.to_vec()))
    });
    let d = OriginDelta {
        origin: p(3),
        from: 0,
        to: u64::MAX,
        entries: vec![],
    };
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), Message::Delta { deltas: vec![d] })
    });
    assert_eq!(g.rejected().absurd_version, 5);
    assert_eq!(watermark(&g, 3), 0);
    run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(3, "x", 1, b"ok")]))
    });
    assert_eq!(
        g.entry(&p(3), "x").unwrap().value.as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(watermark(&g, 3), 1);
}

#[test]
fn oversized_and_malformed_input_is_rejected_and_counted() {
    let mut config = cfg(Mode::Combined, Variant::BlindCounter, 1);
    config.max_origins = 100;
    let mut g = static_node(10, 1, config);
    // A digest longer than max_origins.
    let digest = Digest {
        complete: true,
        versions: (0..101).map(|i| (p(i), 1)).collect(),
    };
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(
            cx,
            p(3),
            Message::Syn {
                exchange: Exchange::PushPull,
                digest,
            },
        )
    });
    assert!(sends(&out).is_empty());
    assert_eq!(g.rejected().oversized_messages, 1);
    // A rumor batch over MAX_ITEMS.
    let many = vec![entry(3, "x", 1, b""); MAX_ITEMS + 1];
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(many))
    });
    assert_eq!(g.rejected().oversized_messages, 2);
    assert_eq!(g.entry(&p(3), "x"), None);
    // An oversized value.
    let big = entry(3, "x", 1, &vec![0u8; 17 * 1024]);
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![big]))
    });
    assert_eq!(g.rejected().oversized, 1);
    // Delta rows out of order or outside their range.
    let rows = vec![
        OriginDelta {
            origin: p(3),
            from: 0,
            to: 2,
            entries: vec![("a".into(), 2, None), ("b".into(), 1, None)],
        },
        OriginDelta {
            origin: p(4),
            from: 0,
            to: 2,
            entries: vec![("a".into(), 3, None)],
        },
        OriginDelta {
            origin: p(5),
            from: 2,
            to: 2,
            entries: vec![],
        },
    ];
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), Message::Delta { deltas: rows })
    });
    assert_eq!(g.rejected().malformed, 3);
    assert_eq!(g.versions().filter(|(_, v)| *v > 0).count(), 0);
}

#[test]
fn publish_validates_its_input() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    let out = run(&mut g, 1, |g, cx| {
        g.handle_command(
            cx,
            Command::Publish {
                req: 1,
                key: "x".repeat(300),
                value: vec![],
            },
        )
    });
    assert!(events(&out).contains(&Event::CommandFailed {
        req: 1,
        error: Error::KeyTooLong(256)
    }));
    let out = run(&mut g, 1, |g, cx| {
        g.handle_command(
            cx,
            Command::Publish {
                req: 2,
                key: "x".into(),
                value: vec![0; 20_000],
            },
        )
    });
    assert!(matches!(
        events(&out)[0],
        Event::CommandFailed {
            req: 2,
            error: Error::ValueTooLarge(_)
        }
    ));
    assert_eq!(publish(&mut g, "x", b"1"), 1);
    assert_eq!(publish(&mut g, "y", b"1"), 2);
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        0u64..6,
        0u8..4,
        prop_oneof![1u64..8, Just(0), Just(u64::MAX), Just(MAX_VERSION + 1)],
        any::<bool>(),
    )
        .prop_map(|(o, k, version, del)| Entry {
            origin: p(o),
            key: format!("k{k}"),
            version,
            value: (!del).then(|| ByteBuf::from(vec![k])),
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    let row = (
        0u64..6,
        0u64..9,
        0u64..9,
        proptest::collection::vec((0u8..4, 0u64..10), 0..4),
    )
        .prop_map(|(o, from, to, es)| OriginDelta {
            origin: p(o),
            from,
            to,
            entries: es
                .into_iter()
                .map(|(k, v)| (format!("k{k}"), v, None))
                .collect(),
        });
    prop_oneof![
        proptest::collection::vec(arb_entry(), 0..6).prop_map(gossip_msg),
        proptest::collection::vec(row, 0..4).prop_map(|deltas| Message::Delta { deltas }),
        (
            proptest::collection::vec((0u64..6, any::<u64>()), 0..6),
            any::<bool>()
        )
            .prop_map(|(v, complete)| {
                Message::Syn {
                    exchange: Exchange::PushPull,
                    digest: Digest {
                        complete,
                        versions: v.into_iter().map(|(o, v)| (p(o), v)).collect(),
                    },
                }
            }),
        proptest::collection::vec((0u64..6, any::<u64>()), 0..6).prop_map(|r| Message::SynAck {
            deltas: vec![],
            request: r.into_iter().map(|(o, v)| (p(o), v)).collect(),
        }),
        (any::<u64>(), proptest::collection::vec(any::<bool>(), 0..4))
            .prop_map(|(seq, known)| Message::GossipReply { seq, known }),
        any::<u64>().prop_map(|seq| Message::Nack { seq }),
        (
            proptest::collection::vec((0u64..8, any::<u64>(), 0u8..4), 0..8),
            any::<bool>()
        )
            .prop_map(|(rows, complete)| Message::MemberDigest {
                complete,
                rows: rows
                    .into_iter()
                    .map(|(x, i, s)| {
                        let s = [
                            MemberState::Alive,
                            MemberState::Suspect,
                            MemberState::Dead,
                            MemberState::Left,
                        ][usize::from(s)];
                        MemberRow(p(x), i, s)
                    })
                    .collect(),
            }),
        proptest::collection::vec(0u64..8, 0..6).prop_map(|w| Message::MemberDelta {
            members: vec![],
            want: w.into_iter().map(p).collect(),
        }),
    ]
}

proptest! {
    /// Whatever arrives, nothing panics and no held version ever goes backwards.
    #[test]
    fn hostile_input_never_panics_or_loses_newer_versions(msgs in proptest::collection::vec(arb_message(), 1..30)) {
        let mut g = static_node(5, 1, cfg(Mode::Combined, Variant::FeedbackCounter, 2));
        publish(&mut g, "own", b"x");
        for (i, m) in msgs.into_iter().enumerate() {
            let before: Vec<(PeerId, String, u64)> = (0..6)
                .flat_map(|o| g.entries(&p(o)).map(move |(k, e)| (p(o), k.clone(), e.version)).collect::<Vec<_>>())
                .collect();
            let wm: Vec<(PeerId, u64)> = g.versions().map(|(o, v)| (*o, v)).collect();
            let out = run(&mut g, i as u64, |g, cx| g.handle_message(cx, p(2), m));
            for (o, k, v) in before {
                prop_assert!(g.entry(&o, &k).is_some_and(|e| e.version >= v));
            }
            for (o, v) in wm {
                prop_assert!(watermark(&g, 0) < u64::MAX);
                prop_assert!(g.versions().any(|(x, w)| *x == o && w >= v));
            }
            prop_assert!(g.entries(&p(1)).all(|(_, e)| e.version <= 1), "own data forged");
            for (_, m) in sends(&out) {
                prop_assert!(peerlab_overlay::codec::encoded_len(&m) <= g.config().max_message_bytes);
            }
            tick(&mut g, 10_000 + i as u64);
        }
        prop_assert!(g.versions().all(|(_, v)| v <= MAX_VERSION));
    }
}

// ---- membership ----

fn swim(me: u64, others: &[u64]) -> Gossip {
    with_config(me, others, Config::lan())
}

fn with_config(me: u64, others: &[u64], config: Config) -> Gossip {
    Gossip::with_members(
        k(me),
        vec![format!("/mem/{me}")],
        config,
        others
            .iter()
            .map(|o| MemberUpdate::alive(&k(*o), 0, vec![format!("/mem/{o}")])),
    )
    .unwrap()
}

/// `peer`'s own signed record at `incarnation` with `addrs`, or a claim about it.
fn signed(peer: u64, incarnation: u64, state: MemberState, addrs: &[&str]) -> MemberUpdate {
    let addrs = addrs.iter().map(|a| a.to_string()).collect();
    match state {
        MemberState::Alive => MemberUpdate::alive(&k(peer), incarnation, addrs),
        MemberState::Left => MemberUpdate::left(&k(peer), incarnation, addrs),
        claim => MemberUpdate::alive(&k(peer), incarnation, addrs).claim(claim),
    }
}

/// `peer`'s signed record without addresses, or a claim about it.
fn update(peer: u64, incarnation: u64, state: MemberState) -> MemberUpdate {
    signed(peer, incarnation, state, &[])
}

#[test]
fn swim_precedence_rules() {
    use MemberState::*;
    use members::overrides;
    assert!(overrides(1, Alive, 0, Suspect));
    assert!(!overrides(0, Alive, 0, Suspect));
    assert!(overrides(0, Suspect, 0, Alive));
    assert!(!overrides(0, Suspect, 0, Suspect));
    assert!(overrides(0, Dead, 0, Suspect));
    assert!(!overrides(5, Suspect, 0, Dead));
    assert!(
        overrides(1, Alive, 0, Dead),
        "a member may rejoin with a higher incarnation"
    );
    assert!(!overrides(0, Alive, 0, Dead));
    assert!(overrides(0, Left, 0, Dead));
    assert!(!overrides(9, Dead, 0, Left));
}

#[test]
fn suspicion_about_oneself_is_refuted_with_a_higher_incarnation() {
    let mut g = swim(1, &[2, 3]);
    let msg = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![update(1, 0, MemberState::Suspect)],
        entries: vec![],
    };
    let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(2), msg));
    assert_eq!(g.incarnation(), 1);
    assert!(events(&out).contains(&Event::Refuted { incarnation: 1 }));
    let direct = sends(&out);
    assert!(direct.iter().any(|(to, m)| *to == p(2)
        && matches!(m, Message::Gossip { members, .. } if members[0] == MemberUpdate::alive(&k(1), 1, vec!["/mem/1".into()]))));
    // A stale suspicion (older incarnation) is ignored.
    let msg = Message::Gossip {
        seq: 2,
        feedback: false,
        members: vec![update(1, 0, MemberState::Suspect)],
        entries: vec![],
    };
    run(&mut g, 2, |g, cx| g.handle_message(cx, p(2), msg));
    assert_eq!(g.incarnation(), 1);
}

#[test]
fn failed_probes_lead_to_suspicion_then_death() {
    let mut g = swim(1, &[2, 3, 4, 5]);
    let out = run(&mut g, 0, |g, cx| g.handle_timer(cx, Timer::Probe));
    let (target, seq) = sends(&out)
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Ping { seq, .. } => Some((to, seq)),
            _ => None,
        })
        .unwrap();
    let out = run(&mut g, 500, |g, cx| {
        g.handle_timer(cx, Timer::ProbeTimeout { seq })
    });
    let helpers: Vec<PeerId> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::PingReq { target: t, .. } if *t == target))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(helpers.len(), 3);
    assert!(!helpers.contains(&target));
    // No ack by the next probe: suspect, told directly, suspicion timer set.
    let out = run(&mut g, 1000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert_eq!(g.member(&target).unwrap().state, MemberState::Suspect);
    assert!(events(&out).contains(&Event::MemberSuspect { peer: target }));
    assert!(
        sends(&out)
            .iter()
            .any(|(to, m)| *to == target && matches!(m, Message::Gossip { .. }))
    );
    let timer = Timer::Suspicion {
        peer: target,
        incarnation: 0,
    };
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Timer { timer: t, .. } if *t == timer))
    );
    let out = run(&mut g, 6000, |g, cx| g.handle_timer(cx, timer.clone()));
    assert_eq!(g.member(&target).unwrap().state, MemberState::Dead);
    assert_eq!(events(&out), vec![Event::MemberDown { peer: target }]);
    // Firing again (stale) does nothing.
    assert!(events(&run(&mut g, 6001, |g, cx| g.handle_timer(cx, timer.clone()))).is_empty());
}

#[test]
fn indirect_acks_prevent_suspicion() {
    let mut g = swim(1, &[2, 3, 4, 5]);
    let out = run(&mut g, 0, |g, cx| g.handle_timer(cx, Timer::Probe));
    let (target, seq) = sends(&out)
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Ping { seq, .. } => Some((to, seq)),
            _ => None,
        })
        .unwrap();
    run(&mut g, 500, |g, cx| {
        g.handle_timer(cx, Timer::ProbeTimeout { seq })
    });
    let helper = [2, 3, 4, 5]
        .into_iter()
        .map(p)
        .find(|h| *h != target)
        .unwrap();
    run(&mut g, 700, |g, cx| {
        g.handle_message(cx, helper, Message::IndirectAck { seq, target })
    });
    run(&mut g, 1000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert_eq!(g.member(&target).unwrap().state, MemberState::Alive);
}

#[test]
fn relays_forward_indirect_acks() {
    let mut h = swim(2, &[1, 3]);
    let out = run(&mut h, 0, |g, cx| {
        g.handle_message(
            cx,
            p(1),
            Message::PingReq {
                seq: 42,
                target: p(3),
            },
        )
    });
    let relay_seq = match sends(&out).as_slice() {
        [(to, Message::Ping { seq, .. })] if *to == p(3) => *seq,
        o => panic!("{o:?}"),
    };
    // An ack from someone else is not the target's.
    assert!(
        sends(&run(&mut h, 1, |g, cx| g.handle_message(
            cx,
            p(1),
            Message::Ack {
                seq: relay_seq,
                members: 0
            }
        )))
        .is_empty()
    );
    let out = run(&mut h, 1, |g, cx| {
        g.handle_message(
            cx,
            p(3),
            Message::Ack {
                seq: relay_seq,
                members: 0,
            },
        )
    });
    assert_eq!(
        sends(&out),
        vec![(
            p(1),
            Message::IndirectAck {
                seq: 42,
                target: p(3)
            }
        )]
    );
}

#[test]
fn join_through_a_seed_and_member_events() {
    let mut seed = swim(1, &[2, 3]);
    let mut joiner = Gossip::new(k(9), vec!["/mem/9".into()], Config::lan()).unwrap();
    let out = run(&mut joiner, 0, |g, cx| {
        g.handle_command(cx, Command::Join { seeds: vec![p(1)] })
    });
    let join = sends(&out);
    assert!(matches!(join.as_slice(), [(to, Message::Join { .. })] if *to == p(1)));
    let out = run(&mut seed, 1, |g, cx| {
        g.handle_message(cx, p(9), join[0].1.clone())
    });
    assert!(events(&out).contains(&Event::MemberUp {
        peer: p(9),
        addrs: vec!["/mem/9".into()]
    }));
    // Newly known, not back from the dead.
    assert!(!events(&out).contains(&Event::MemberBack { peer: p(9) }));
    let reply = sends(&out)
        .into_iter()
        .find(|(to, _)| *to == p(9))
        .unwrap()
        .1;
    let out = run(&mut joiner, 2, |g, cx| g.handle_message(cx, p(1), reply));
    let ev = events(&out);
    assert!(ev.contains(&Event::Joined { members: 3 }));
    // What the seed did not know, another member brings: the joiner sends one of them
    // its digest at once, not a member sync period later.
    let digests: Vec<PeerId> = sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::MemberDigest { .. }))
        .map(|(to, _)| to)
        .collect();
    assert!(
        matches!(digests.as_slice(), [to] if *to == p(2) || *to == p(3)),
        "a digest to a member other than the seed: {digests:?}"
    );
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::MemberUp { .. }))
            .count(),
        3
    );
    // A repeated fact changes nothing and emits nothing.
    let msg = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![update(2, 0, MemberState::Alive)],
        entries: vec![],
    };
    assert!(
        events(&run(&mut joiner, 3, |g, cx| g.handle_message(
            cx,
            p(1),
            msg
        )))
        .is_empty()
    );
}

/// A member restarted with the same identity on new ports, before anyone declared it dead:
/// its newer alive update carries new addresses, and they are reported (`MemberAddrs`), so
/// the driver stops dialling only the dead process's ports. Same addresses: no event.
#[test]
fn new_addresses_of_a_member_that_stayed_up_are_reported() {
    let mut g = swim(1, &[2, 3]);
    let with = |inc, addr: &str| signed(2, inc, MemberState::Alive, &[addr]);
    let msg = |u: MemberUpdate| Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![u],
        entries: vec![],
    };
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), msg(with(1, "/mem/2-old")))
    });
    let first = events(&out);
    let out = run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(3), msg(with(2, "/mem/2-new")))
    });
    assert!(
        events(&out).contains(&Event::MemberAddrs {
            peer: p(2),
            addrs: vec!["/mem/2-new".into()]
        }),
        "after {first:?}: {:?}",
        events(&out)
    );
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(3), msg(with(3, "/mem/2-new")))
    });
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::MemberAddrs { .. })),
        "unchanged addresses: {:?}",
        events(&out)
    );
}

#[test]
fn join_gives_up_after_every_seed_failed() {
    let mut joiner = Gossip::new(k(9), vec![], Config::lan()).unwrap();
    run(&mut joiner, 0, |g, cx| {
        g.handle_command(
            cx,
            Command::Join {
                seeds: vec![p(1), p(2)],
            },
        )
    });
    let mut failed = false;
    for attempt in 0..6 {
        let out = run(&mut joiner, attempt as u64 + 1, |g, cx| {
            g.handle_timer(cx, Timer::JoinRetry { attempt })
        });
        failed |= events(&out).contains(&Event::JoinFailed);
    }
    assert!(failed);
}

/// The Join messages in `out`, by seed.
fn joins_to(out: &[Out]) -> Vec<PeerId> {
    sends(out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::Join { .. }))
        .map(|(to, _)| to)
        .collect()
}

#[test]
fn a_join_under_way_gains_seeds_without_asking_again_and_waits_longer_each_round() {
    let mut joiner = Gossip::new(k(9), vec![], Config::lan()).unwrap();
    let join = |seeds: Vec<PeerId>| {
        move |g: &mut Gossip, cx: &mut Cx<'_, Gossip>| g.handle_command(cx, Command::Join { seeds })
    };
    let out = run(&mut joiner, 0, join(vec![p(1)]));
    assert_eq!(joins_to(&out), vec![p(1)]);
    // Asked again (the driver's rejoin round) while the first is under way: nothing sent.
    let out = run(&mut joiner, 10, join(vec![p(1), p(2)]));
    assert!(joins_to(&out).is_empty(), "{:?}", sends(&out));
    // The rotation now has both seeds; round 0 waits one timeout, round 1 two.
    let mut now = 1000;
    let mut asked = Vec::new();
    for attempt in 0..3 {
        let out = run(&mut joiner, now, |g, cx| {
            g.handle_timer(cx, Timer::JoinRetry { attempt })
        });
        asked.extend(joins_to(&out));
        let next = out
            .iter()
            .find_map(|o| match o {
                Output::Timer {
                    at,
                    timer: Timer::JoinRetry { .. },
                } => Some(at.0 / 1000),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            next - now,
            if attempt == 0 { 1000 } else { 2000 },
            "attempt {attempt}"
        );
        now = next;
    }
    assert_eq!(asked, vec![p(2), p(1), p(2)]);
}

#[test]
fn a_node_a_seed_answered_does_not_join_again_while_it_has_members() {
    let mut seed = swim(1, &[2, 3]);
    let mut joiner = Gossip::new(k(9), vec!["/mem/9".into()], Config::lan()).unwrap();
    let cmd = |g: &mut Gossip, cx: &mut Cx<'_, Gossip>| {
        g.handle_command(cx, Command::Join { seeds: vec![p(1)] })
    };
    let out = run(&mut joiner, 0, cmd);
    let (_, request) = sends(&out).remove(0);
    let out = run(&mut seed, 1, |g, cx| g.handle_message(cx, p(9), request));
    let (_, reply) = sends(&out)
        .into_iter()
        .find(|(_, m)| matches!(m, Message::JoinReply { .. }))
        .unwrap();
    run(&mut joiner, 2, |g, cx| g.handle_message(cx, p(1), reply));
    assert_eq!(joiner.up_count(), 3);
    assert!(joins_to(&run(&mut joiner, 3, cmd)).is_empty());
}

#[test]
fn leave_spreads_then_goes_silent() {
    let mut g = swim(1, &[2, 3, 4]);
    run(&mut g, 0, |g, cx| g.handle_command(cx, Command::Leave));
    let out = tick(&mut g, 200);
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| matches!(m, Message::Gossip { members, .. }
        if members.iter().any(|u| u.peer == p(1) && u.state == MemberState::Left)))
    );
    let mut left = false;
    for t in 2..6 {
        left |= events(&tick(&mut g, t * 200)).contains(&Event::Left);
    }
    assert!(left && g.has_left());
    assert!(
        sends(&run(&mut g, 2000, |g, cx| g.handle_message(
            cx,
            p(2),
            Message::Ping { seq: 1, members: 0 }
        )))
        .is_empty()
    );
    // Others see it leave once.
    let mut h = swim(2, &[1, 3]);
    let msg = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![update(1, 0, MemberState::Left)],
        entries: vec![],
    };
    let out = run(&mut h, 1, |g, cx| g.handle_message(cx, p(3), msg.clone()));
    assert_eq!(events(&out), vec![Event::MemberLeft { peer: p(1) }]);
    assert!(events(&run(&mut h, 2, |g, cx| g.handle_message(cx, p(3), msg))).is_empty());
}

#[test]
fn tombstones_expire_departed_members_first_and_dead_ones_after_dead_expiry() {
    let mut g = swim(1, &[2, 3, 4]);
    let msg = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![
            update(2, 0, MemberState::Dead),
            update(4, 0, MemberState::Left),
        ],
        entries: vec![],
    };
    run(&mut g, 1, |g, cx| g.handle_message(cx, p(3), msg));
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Dead);
    assert_eq!(g.member(&p(4)).unwrap().state, MemberState::Left);
    // A stale "alive" does not resurrect the tombstone.
    let msg = Message::Gossip {
        seq: 2,
        feedback: false,
        members: vec![update(2, 0, MemberState::Alive)],
        entries: vec![],
    };
    run(&mut g, 2, |g, cx| g.handle_message(cx, p(3), msg));
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Dead);
    run(&mut g, 30_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!(g.member(&p(2)).is_some() && g.member(&p(4)).is_some());
    // Past `tombstone_expiry` (60 s) the departed member is forgotten; the dead one is kept
    // (it may only be cut off, and member syncs still try it) until `dead_expiry` (1 h).
    run(&mut g, 62_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!(g.member(&p(4)).is_none());
    assert!(g.member(&p(2)).is_some());
    run(&mut g, 3_590_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!(g.member(&p(2)).is_some());
    run(&mut g, 3_602_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!(g.member(&p(2)).is_none());
}

/// Identities are free: members declared dead are kept past `tombstone_expiry` only up to
/// `max_dead_kept`, the most recently dead first.
#[test]
fn dead_members_kept_past_the_tombstone_expiry_are_capped() {
    let config = Config {
        max_dead_kept: 1,
        ..Config::lan()
    };
    let mut g = with_config(1, &[2, 3, 4, 5], config);
    for (i, (member, at)) in [(2, 1), (3, 2_000), (4, 4_000)].into_iter().enumerate() {
        let msg = Message::Gossip {
            seq: i as u64 + 1,
            feedback: false,
            members: vec![update(member, 0, MemberState::Dead)],
            entries: vec![],
        };
        run(&mut g, at, |g, cx| g.handle_message(cx, p(5), msg));
    }
    // Before `tombstone_expiry` (60 s) all three are kept.
    run(&mut g, 30_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!([2, 3, 4].iter().all(|m| g.member(&p(*m)).is_some()));
    // Past it, only the one declared dead last.
    run(&mut g, 70_000, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert!(g.member(&p(2)).is_none() && g.member(&p(3)).is_none());
    assert_eq!(g.member(&p(4)).unwrap().state, MemberState::Dead);
    assert!(
        g.member(&p(5)).unwrap().state.is_up(),
        "members that are up stay"
    );
}

/// A member held dead that proves itself alive again (a newer incarnation) is reported up
/// and back, once; one that left and comes back is only up.
#[test]
fn a_member_alive_again_after_being_dead_is_reported_back() {
    let mut g = swim(1, &[2, 3]);
    let gossip = |seq, u| Message::Gossip {
        seq,
        feedback: false,
        members: vec![u],
        entries: vec![],
    };
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip(1, update(2, 0, MemberState::Dead)))
    });
    let back = MemberUpdate::alive(&k(2), 1, vec!["/mem/2".into()]);
    let out = run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(2), gossip(2, back.clone()))
    });
    let evs = events(&out);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::MemberUp { peer, .. } if *peer == p(2)))
    );
    assert_eq!(
        evs.iter()
            .filter(|e| **e == Event::MemberBack { peer: p(2) })
            .count(),
        1
    );
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(2), gossip(3, back))
    });
    assert!(!events(&out).contains(&Event::MemberBack { peer: p(2) }));
}

#[test]
fn dead_expiry_below_tombstone_expiry_is_refused() {
    let config = Config {
        dead_expiry: Duration::from_secs(10),
        ..Config::lan()
    };
    assert!(Gossip::new(k(1), vec![], config).is_err());
}

#[test]
fn member_table_and_addresses_are_bounded() {
    let mut config = Config::lan();
    config.max_members = 3;
    let mut g = Gossip::new(k(1), vec![], config).unwrap();
    let ups: Vec<MemberUpdate> = (2..8).map(|i| update(i, 0, MemberState::Alive)).collect();
    run(&mut g, 1, |g, cx| {
        g.handle_message(
            cx,
            p(2),
            Message::MemberDelta {
                members: ups,
                want: vec![],
            },
        )
    });
    assert_eq!(g.members().count(), 3);
    assert_eq!(g.rejected().over_capacity, 3);
    let mut u = update(2, 5, MemberState::Alive);
    u.addrs = vec!["x".repeat(300)];
    run(&mut g, 1, |g, cx| {
        g.handle_message(
            cx,
            p(2),
            Message::MemberDelta {
                members: vec![u],
                want: vec![],
            },
        )
    });
    assert_eq!(g.rejected().oversized, 1);
    assert_eq!(g.member(&p(2)).unwrap().incarnation, 0);
}

fn row(peer: u64, incarnation: u64, state: MemberState) -> MemberRow {
    MemberRow(p(peer), incarnation, state)
}

/// A complete member digest of `(peer, incarnation, state)` rows.
fn digest(rows: &[(u64, u64, MemberState)]) -> Message {
    Message::MemberDigest {
        complete: true,
        rows: rows.iter().map(|&(x, i, st)| row(x, i, st)).collect(),
    }
}

fn member_deltas(out: &[Out]) -> Vec<(PeerId, Vec<MemberUpdate>, Vec<PeerId>)> {
    sends(out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            Message::MemberDelta { members, want } => Some((to, members, want)),
            _ => None,
        })
        .collect()
}

#[test]
fn member_digests_of_equal_tables_draw_no_answer() {
    // Node 1 holds 2 and 3 alive at incarnation 0; node 2's digest says the same.
    let mut g = swim(1, &[2, 3]);
    let d = digest(&[
        (2, 0, MemberState::Alive),
        (1, 0, MemberState::Alive),
        (3, 0, MemberState::Alive),
    ]);
    let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(2), d));
    assert!(sends(&out).is_empty(), "{:?}", sends(&out));
    // The timer sends a digest of the whole table, own row first, and no records.
    let out = run(&mut g, 2, |g, cx| g.handle_timer(cx, Timer::MemberSync));
    let digests: Vec<_> = sends(&out)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::MemberDigest { complete, rows } => Some((complete, rows)),
            _ => None,
        })
        .collect();
    assert_eq!(digests.len(), 1);
    let (complete, rows) = &digests[0];
    assert!(*complete);
    assert_eq!(rows[0], row(1, 0, MemberState::Alive));
    let mut rest: Vec<MemberRow> = rows[1..].to_vec();
    rest.sort_by_key(|r| r.0);
    let mut expect = vec![row(2, 0, MemberState::Alive), row(3, 0, MemberState::Alive)];
    expect.sort_by_key(|r| r.0);
    assert_eq!(rest, expect);
}

#[test]
fn member_digests_are_answered_with_only_what_differs() {
    let mut g = swim(1, &[2, 3, 4, 5]);
    // Node 1 learned that 3 refuted a suspicion (incarnation 2).
    let refuted = Message::MemberDelta {
        members: vec![signed(3, 2, MemberState::Alive, &["/mem/3"])],
        want: vec![],
    };
    run(&mut g, 1, |g, cx| g.handle_message(cx, p(4), refuted));
    // Node 2's digest: 3 at an older incarnation, 4 as held, 6 unknown to node 1, 5 and
    // node 1 itself missing.
    let d = digest(&[
        (2, 0, MemberState::Alive),
        (3, 0, MemberState::Alive),
        (4, 0, MemberState::Alive),
        (6, 1, MemberState::Alive),
    ]);
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(2), d));
    let deltas = member_deltas(&out);
    assert_eq!(deltas.len(), 1);
    let (to, members, want) = &deltas[0];
    assert_eq!(*to, p(2));
    assert_eq!(want, &vec![p(6)]);
    let mut got: Vec<(PeerId, u64)> = members.iter().map(|u| (u.peer, u.incarnation)).collect();
    got.sort();
    let mut expect = vec![(p(1), 0), (p(3), 2), (p(5), 0)];
    expect.sort();
    assert_eq!(
        got, expect,
        "newer records and unlisted members, nothing else"
    );
    assert!(
        members.iter().all(|u| !u.addrs.is_empty()),
        "records carry addresses"
    );
    // Node 2 answers the want with its record of 6, which node 1 then holds.
    let mut h = swim(2, &[1, 3, 4]);
    let six = Message::MemberDelta {
        members: vec![signed(6, 1, MemberState::Alive, &["/mem/6"])],
        want: vec![],
    };
    run(&mut h, 1, |g, cx| g.handle_message(cx, p(3), six));
    let ask = Message::MemberDelta {
        members: vec![],
        want: vec![p(6), p(2), p(9)],
    };
    let out = run(&mut h, 2, |g, cx| g.handle_message(cx, p(1), ask));
    let deltas = member_deltas(&out);
    assert_eq!(deltas.len(), 1);
    let (_, members, want) = &deltas[0];
    assert!(want.is_empty(), "an answer to a want asks for nothing");
    let got: Vec<(PeerId, u64)> = members.iter().map(|u| (u.peer, u.incarnation)).collect();
    assert_eq!(
        got,
        vec![(p(6), 1), (p(2), 0)],
        "unknown members are skipped"
    );
    let (_, members, _) = deltas.into_iter().next().unwrap();
    run(&mut g, 3, |g, cx| {
        g.handle_message(
            cx,
            p(2),
            Message::MemberDelta {
                members,
                want: vec![],
            },
        )
    });
    assert_eq!(g.member(&p(6)).unwrap().incarnation, 1);
    assert_eq!(g.member(&p(6)).unwrap().addrs, vec!["/mem/6".to_string()]);
}

#[test]
fn a_member_digest_that_says_this_node_is_dead_is_refuted() {
    let mut g = swim(1, &[2, 3]);
    let d = digest(&[
        (2, 0, MemberState::Alive),
        (1, 0, MemberState::Dead),
        (3, 0, MemberState::Alive),
    ]);
    let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(2), d));
    assert_eq!(g.incarnation(), 1, "refuted with a higher incarnation");
    assert!(sends(&out).iter().any(|(to, m)| *to == p(2)
        && matches!(m, Message::Gossip { members, .. } if members[0].peer == p(1) && members[0].incarnation == 1 && members[0].state == MemberState::Alive)));
    // An older record of this node is answered with the current one, without a new refutation.
    let d = digest(&[(2, 0, MemberState::Alive), (1, 0, MemberState::Alive)]);
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(2), d));
    assert_eq!(g.incarnation(), 1);
    let deltas = member_deltas(&out);
    assert!(
        deltas[0]
            .1
            .iter()
            .any(|u| u.peer == p(1) && u.incarnation == 1)
    );
    assert!(deltas[0].1.iter().any(|u| u.peer == p(3)), "3 was unlisted");
}

#[test]
fn member_digests_and_their_answers_are_bounded() {
    let mut config = Config::lan();
    config.max_message_bytes = 4096;
    config.max_value_len = 1024;
    config.max_key_len = 64;
    let members: Vec<MemberUpdate> = (2..400)
        .map(|i| MemberUpdate::alive(&k(i), 0, vec![format!("/ip4/127.0.0.1/udp/{i}/quic-v1")]))
        .collect();
    let mut g = Gossip::with_members(k(1), vec!["/mem/1".into()], config, members).unwrap();
    let out = run(&mut g, 1, |g, cx| g.handle_timer(cx, Timer::MemberSync));
    for (_, m) in sends(&out) {
        assert!(peerlab_overlay::codec::encoded_len(&m) <= 4096);
        if let Message::MemberDigest { complete, rows } = m {
            assert!(!complete, "398 members do not fit 4 KiB");
            assert!(rows.len() > 50);
            assert_eq!(rows[0].0, p(1));
        }
    }
    // A digest from someone who knows none of them: the answer fits the budget.
    let rows: Vec<_> = (1000..1090).map(|i| (i, 0, MemberState::Alive)).collect();
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(2), digest(&rows)));
    let d = member_deltas(&out);
    assert_eq!(d.len(), 1);
    // Each wanted id takes 34 bytes; the want list takes at most half of the 4 KiB.
    assert_eq!(
        d[0].2.len(),
        2048 / 34,
        "unknown members are wanted, half a budget of them"
    );
    assert!(!d[0].1.is_empty());
    for (_, m) in sends(&out) {
        assert!(peerlab_overlay::codec::encoded_len(&m) <= 4096);
    }
    // Too many rows: refused whole.
    let huge = Message::MemberDigest {
        complete: true,
        rows: (0..MAX_ITEMS as u64 + 1)
            .map(|i| row(i, 0, MemberState::Alive))
            .collect(),
    };
    let before = g.rejected().oversized_messages;
    let out = run(&mut g, 3, |g, cx| g.handle_message(cx, p(2), huge));
    assert!(sends(&out).is_empty());
    assert_eq!(g.rejected().oversized_messages, before + 1);
}

#[test]
fn stale_suspicions_are_answered_with_the_newer_record() {
    // Member 2 refuted at incarnation 1; a node that missed it still spreads "suspect at 0".
    let mut g = swim(1, &[2, 3]);
    let alive = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![update(2, 1, MemberState::Alive)],
        entries: vec![],
    };
    run(&mut g, 1, |g, cx| g.handle_message(cx, p(3), alive));
    let stale = Message::Gossip {
        seq: 2,
        feedback: false,
        members: vec![update(2, 0, MemberState::Suspect)],
        entries: vec![],
    };
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(3), stale.clone()));
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Alive);
    assert!(sends(&out).iter().any(|(to, m)| *to == p(3)
        && matches!(m, Message::Gossip { members, .. } if members[0].peer == p(2) && members[0].incarnation == 1 && members[0].state == MemberState::Alive)));
    // The suspect itself answers a stale suspicion with its current record.
    let mut x = swim(2, &[1, 3]);
    run(&mut x, 1, |g, cx| g.handle_message(cx, p(3), stale.clone()));
    assert_eq!(x.incarnation(), 1);
    let out = run(&mut x, 2, |g, cx| g.handle_message(cx, p(1), stale));
    assert_eq!(
        x.incarnation(),
        1,
        "a stale suspicion does not raise the incarnation again"
    );
    assert!(sends(&out).iter().any(|(to, m)| *to == p(1)
        && matches!(m, Message::Gossip { members, .. } if members[0].peer == p(2) && members[0].incarnation == 1)));
    // A current claim (not stale) draws no correction.
    let mut h = swim(1, &[2, 3]);
    let fresh = Message::Gossip {
        seq: 3,
        feedback: false,
        members: vec![update(2, 0, MemberState::Suspect)],
        entries: vec![],
    };
    let out = run(&mut h, 1, |g, cx| g.handle_message(cx, p(3), fresh));
    assert!(sends(&out).is_empty());
}

#[test]
fn a_newer_version_replaces_the_hot_rumor_of_an_older_one() {
    let mut g = static_node(10, 0, cfg(Mode::Rumor, Variant::BlindCounter, 5));
    publish(&mut g, "a", b"1");
    publish(&mut g, "b", b"1");
    publish(&mut g, "a", b"2");
    assert_eq!(g.hot_data_rumors(), 2);
    let ps = pushes(&tick(&mut g, 200));
    let sent: Vec<(String, u64)> = ps[0].2.iter().map(|e| (e.key.clone(), e.version)).collect();
    assert_eq!(sent, vec![("b".to_string(), 2), ("a".to_string(), 3)]);
    // A received newer version also retires the older rumor.
    let mut h = static_node(10, 1, cfg(Mode::Rumor, Variant::BlindCounter, 5));
    run(&mut h, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(3, "x", 1, b"")]))
    });
    run(&mut h, 2, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(3, "x", 2, b"")]))
    });
    assert_eq!(h.hot_data_rumors(), 1);
}

proptest! {
    /// The member table's count of members that are up always equals a count of the table,
    /// whatever updates arrive and however tombstones expire.
    #[test]
    fn the_up_count_follows_the_table(ops in proptest::collection::vec((2u64..8, 0u64..4, 0u8..4, 0u64..120_000), 1..60)) {
        let mut g = swim(1, &[2, 3]);
        for (peer, inc, st, at_ms) in ops {
            let state = [MemberState::Alive, MemberState::Suspect, MemberState::Dead, MemberState::Left][usize::from(st)];
            let msg = Message::Gossip { seq: 1, feedback: false, members: vec![update(peer, inc, state)], entries: vec![] };
            run(&mut g, at_ms, |g, cx| g.handle_message(cx, p(9), msg));
            run(&mut g, at_ms, |g, cx| g.handle_timer(cx, Timer::Probe));
            let counted = g.members().filter(|(_, m)| m.state.is_up()).count();
            prop_assert_eq!(g.up_count(), counted);
        }
    }
}
