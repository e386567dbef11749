//! Lifeguard's local health (`health.rs`): what moves the score, and what the score stretches.

use super::*;

/// When (ms) the first timer matching `which` in `out` fires.
fn timer_ms(out: &[Out], which: impl Fn(&Timer) -> bool) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::Timer { at, timer } if which(timer) => Some(at.0 / 1000),
        _ => None,
    })
}

fn next_probe_ms(out: &[Out]) -> u64 {
    timer_ms(out, |t| matches!(t, Timer::Probe)).expect("the next probe is scheduled")
}

/// Starts a probe at `now`: its target and sequence number, and when its timeout fires.
fn probe(g: &mut Gossip, now: u64) -> (PeerId, u64, u64, Vec<Out>) {
    let out = run(g, now, |g, cx| g.handle_timer(cx, Timer::Probe));
    let (target, seq) = sends(&out)
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Ping { seq, .. } => Some((to, seq)),
            _ => None,
        })
        .expect("a ping");
    let timeout = timer_ms(&out, |t| matches!(t, Timer::ProbeTimeout { .. })).unwrap();
    (target, seq, timeout, out)
}

/// Lets probe `seq` time out at `at`: the helpers asked to probe indirectly.
fn time_out(g: &mut Gossip, at: u64, seq: u64) -> Vec<PeerId> {
    let out = run(g, at, |g, cx| {
        g.handle_timer(cx, Timer::ProbeTimeout { seq })
    });
    sends(&out)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::PingReq { .. }))
        .map(|(to, _)| to)
        .collect()
}

const OTHERS: [u64; 5] = [2, 3, 4, 5, 6];

#[test]
fn probes_failing_without_nacks_stretch_the_probe_period_and_timeout() {
    let mut g = swim(1, &OTHERS);
    let (_, seq, timeout, out) = probe(&mut g, 0);
    assert_eq!(
        (timeout, next_probe_ms(&out)),
        (500, 1000),
        "healthy: unscaled"
    );
    let helpers = time_out(&mut g, 500, seq);
    assert_eq!(helpers.len(), 3);
    // Nobody answers, nobody nacks.
    let (_, seq, timeout, out) = probe(&mut g, 1000);
    assert_eq!(g.local_health(), 1);
    assert_eq!(timeout, 1000 + 2 * 500, "probe timeout × (score + 1)");
    assert_eq!(
        next_probe_ms(&out),
        1000 + 2 * 1000,
        "probe period × (score + 1)"
    );
    time_out(&mut g, 2000, seq);
    let (_, _, timeout, out) = probe(&mut g, 3000);
    assert_eq!(g.local_health(), 2);
    assert_eq!((timeout, next_probe_ms(&out)), (3000 + 1500, 3000 + 3000));
}

#[test]
fn acks_bring_the_score_back_one_probe_at_a_time() {
    let mut g = swim(1, &OTHERS);
    let (_, seq, _, _) = probe(&mut g, 0);
    time_out(&mut g, 500, seq);
    let (_, seq, _, _) = probe(&mut g, 1000);
    time_out(&mut g, 2000, seq);
    let mut now = 3000;
    for expected in [2, 1, 0, 0] {
        let (target, seq, _, out) = probe(&mut g, now);
        assert_eq!(g.local_health(), expected);
        run(&mut g, now + 1, |g, cx| {
            g.handle_message(cx, target, Message::Ack { seq, members: 0 })
        });
        now = next_probe_ms(&out);
    }
}

#[test]
fn relays_that_nack_keep_the_prober_healthy() {
    let mut g = swim(1, &OTHERS);
    let (target, seq, _, _) = probe(&mut g, 0);
    let helpers = time_out(&mut g, 500, seq);
    for (i, h) in helpers.iter().enumerate() {
        run(&mut g, 900 + i as u64, |g, cx| {
            g.handle_message(cx, *h, Message::Nack { seq })
        });
    }
    let (_, _, _, out) = probe(&mut g, 1000);
    assert_eq!(g.member(&target).unwrap().state, MemberState::Suspect);
    assert_eq!(
        g.local_health(),
        0,
        "the target, not this node, is unreachable"
    );
    assert_eq!(next_probe_ms(&out), 2000);
}

#[test]
fn one_relays_nack_clears_the_prober_and_strangers_nacks_do_not() {
    let mut g = swim(1, &OTHERS);
    let (target, seq, _, _) = probe(&mut g, 0);
    let helpers = time_out(&mut g, 500, seq);
    // The target and a member not asked to help nack: they count for nothing.
    let stranger = OTHERS
        .into_iter()
        .map(p)
        .find(|q| *q != target && !helpers.contains(q))
        .unwrap();
    for from in [target, stranger] {
        run(&mut g, 900, |g, cx| {
            g.handle_message(cx, from, Message::Nack { seq })
        });
    }
    let (_, seq, _, out) = probe(&mut g, 1000);
    assert_eq!(g.local_health(), 1, "no helper nacked");
    // Next probe: one helper of three nacks (the others are across a partition, say).
    let helpers = time_out(&mut g, 2000, seq);
    run(&mut g, 2500, |g, cx| {
        g.handle_message(cx, helpers[0], Message::Nack { seq })
    });
    probe(&mut g, next_probe_ms(&out));
    assert_eq!(
        g.local_health(),
        1,
        "a nack shows the network, not this node, failing"
    );
    // A nack for a probe never sent is an offence.
    let out = run(&mut g, 3001, |g, cx| {
        g.handle_message(cx, helpers[1], Message::Nack { seq: 1 << 40 })
    });
    assert_eq!(
        trust::offences(&out),
        vec![(helpers[1], Offence::Unsolicited)]
    );
}

#[test]
fn a_relay_nacks_a_silent_target_before_the_requesters_probe_ends() {
    let mut h = swim(2, &[1, 3]);
    let req = Message::PingReq {
        seq: 42,
        target: p(3),
    };
    let out = run(&mut h, 0, |g, cx| g.handle_message(cx, p(1), req.clone()));
    let nack_at = timer_ms(&out, |t| matches!(t, Timer::RelayNack { .. })).unwrap();
    assert_eq!(nack_at, 400, "80 % of the probe timeout");
    let relay = match sends(&out).as_slice() {
        [(to, Message::Ping { seq, .. })] if *to == p(3) => *seq,
        o => panic!("{o:?}"),
    };
    let out = run(&mut h, 400, |g, cx| {
        g.handle_timer(cx, Timer::RelayNack { seq: relay })
    });
    assert_eq!(sends(&out), vec![(p(1), Message::Nack { seq: 42 })]);
    // A target that answered is owed no nack.
    let out = run(&mut h, 500, |g, cx| g.handle_message(cx, p(1), req));
    let relay = match sends(&out).as_slice() {
        [(_, Message::Ping { seq, .. })] => *seq,
        o => panic!("{o:?}"),
    };
    run(&mut h, 600, |g, cx| {
        g.handle_message(
            cx,
            p(3),
            Message::Ack {
                seq: relay,
                members: 0,
            },
        )
    });
    let out = run(&mut h, 900, |g, cx| {
        g.handle_timer(cx, Timer::RelayNack { seq: relay })
    });
    assert!(sends(&out).is_empty());
}

#[test]
fn refuting_a_suspicion_of_oneself_raises_the_score() {
    let mut g = swim(1, &OTHERS);
    let msg = Message::Gossip {
        seq: 1,
        feedback: false,
        members: vec![update(1, 0, MemberState::Suspect)],
        entries: vec![],
    };
    run(&mut g, 1, |g, cx| g.handle_message(cx, p(2), msg));
    assert_eq!(g.local_health(), 1);
    let out = run(&mut g, 2, |g, cx| g.handle_timer(cx, Timer::Probe));
    assert_eq!(next_probe_ms(&out), 2 + 2000);
}

#[test]
fn a_multiplier_of_one_is_the_papers_swim() {
    let config = Config {
        max_health_multiplier: 1,
        ..Config::lan()
    };
    let mut g = with_config(1, &OTHERS, config);
    let (_, seq, _, _) = probe(&mut g, 0);
    time_out(&mut g, 500, seq);
    let (_, _, timeout, out) = probe(&mut g, 1000);
    assert_eq!(g.local_health(), 0);
    assert_eq!((timeout, next_probe_ms(&out)), (1500, 2000));
}
