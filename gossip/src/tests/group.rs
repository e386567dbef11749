//! A whole group in the [`Net`] harness: SWIM joins, failure detection and data spread,
//! end to end through the codec, with message latency.

use std::time::Duration;

use peerlab_overlay::{Instant, Keypair, PeerId};
use peerlab_sim::testing::{Net, for_each_seed};

use super::{k, p};
use crate::{Command, Config, Event, Gossip, MemberState};

/// Members of the test group.
const N: u64 = 16;
/// One-way message latency.
const LATENCY: Duration = Duration::from_millis(5);

fn member(n: u64) -> Gossip {
    let key: Keypair = k(n);
    Gossip::new(key, vec![format!("/mem/{n}")], Config::lan()).unwrap()
}

/// Whether `who` sees every one of `members` alive (or suspected) and nobody else.
fn sees_exactly(net: &Net<Gossip>, who: PeerId, members: &[PeerId]) -> bool {
    let g = net.node(&who);
    members
        .iter()
        .filter(|m| **m != who)
        .all(|m| g.member(m).is_some_and(|s| s.state.is_up()))
        && g.members().filter(|(_, s)| s.state.is_up()).count() == members.len() - 1
}

/// N members, each joined through member 0; returns the net once every member lists all
/// the others, or panics naming the seed.
fn group(seed: u64) -> (Net<Gossip>, Vec<PeerId>) {
    let mut net = Net::new(seed).with_latency(LATENCY);
    let peers: Vec<PeerId> = (0..N).map(p).collect();
    for n in 0..N {
        net.add(p(n), member(n));
        if n > 0 {
            net.command(p(n), Command::Join { seeds: vec![p(0)] });
        }
    }
    // Joins answer within a round trip; the news of each joiner then spreads by rumor in
    // O(log N) rounds of 200 ms: well under a second for 16 members.
    let deadline = Instant::ZERO + Duration::from_millis(1500);
    let all = peers.clone();
    assert!(
        net.run_until(deadline, |net| all
            .iter()
            .all(|m| sees_exactly(net, *m, &all))),
        "seed {seed}: the group did not converge within 1.5 s"
    );
    (net, peers)
}

#[test]
fn joins_through_one_seed_reach_every_member() {
    for_each_seed(1..4, |seed| {
        let (net, _) = group(seed);
        let joined = net
            .events()
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Joined { .. }))
            .count();
        assert_eq!(joined as u64, N - 1, "seed {seed}");
    });
}

#[test]
fn a_crash_is_detected_by_every_member_and_nobody_else_is_declared_dead() {
    for_each_seed(1..4, |seed| {
        let (mut net, peers) = group(seed);
        let victim = p(7);
        net.take_events();
        let crashed_at = net.now();
        net.crash(victim);
        let live: Vec<PeerId> = peers.iter().copied().filter(|m| *m != victim).collect();
        // With 15 members probing one target a second each, the victim is probed within a
        // second or two; the probe and its indirect probes fail within the probe timeout,
        // the suspicion expires 5 s later, and the verdict spreads by rumor within a second.
        let deadline = crashed_at + Duration::from_secs(12);
        let watch = live.clone();
        assert!(
            net.run_until(deadline, |net| watch.iter().all(|m| net
                .node(m)
                .member(&victim)
                .is_some_and(|s| s.state == MemberState::Dead))),
            "seed {seed}: not every member declared the crashed one dead within {} s",
            (deadline - crashed_at).as_secs()
        );
        let false_downs: Vec<_> = net
            .events()
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::MemberDown { peer } if *peer != victim))
            .collect();
        assert!(false_downs.is_empty(), "seed {seed}: {false_downs:?}");
        assert!(
            live.iter().all(|m| sees_exactly(&net, *m, &live)),
            "seed {seed}"
        );
    });
}

#[test]
fn a_publication_reaches_every_member() {
    for_each_seed(1..4, |seed| {
        let (mut net, peers) = group(seed);
        let origin = p(3);
        net.command(
            origin,
            Command::Publish {
                req: 1,
                key: "k".into(),
                value: b"v".to_vec(),
            },
        );
        let published = net.now();
        // Rumor mongering reaches everyone in O(log N) rounds of 200 ms; anti-entropy
        // (every second) catches the rest.
        let deadline = published + Duration::from_millis(1500);
        let all = peers.clone();
        assert!(
            net.run_until(deadline, |net| all.iter().all(|m| net
                .node(m)
                .entry(&origin, "k")
                .is_some_and(|e| e.value.as_deref() == Some(&b"v"[..])))),
            "seed {seed}: the value did not reach every member within 1.5 s"
        );
    });
}

/// Messages of each kind sent in `sent`: (rumor pushes, data syns, member digests).
fn kinds(sent: &[peerlab_sim::testing::Sent<crate::Message>]) -> (usize, usize, usize) {
    use crate::Message;
    let count = |f: fn(&Message) -> bool| sent.iter().filter(|s| f(&s.msg)).count();
    (
        count(|m| matches!(m, Message::Gossip { .. })),
        count(|m| matches!(m, Message::Syn { .. })),
        count(|m| matches!(m, Message::MemberDigest { .. })),
    )
}

#[test]
fn a_group_at_rest_pushes_no_rumors_and_its_push_pulls_slow_to_the_rest_period() {
    for_each_seed(1..4, |seed| {
        let (mut net, _) = group(seed);
        // The join rumors die out and the push-pulls back off.
        net.run_for(Duration::from_secs(120));
        net = net.with_send_log();
        net.take_sent();
        let window = Duration::from_secs(120);
        net.run_for(window);
        let (pushes, syns, digests) = kinds(&net.take_sent());
        assert_eq!(pushes, 0, "seed {seed}: a round without news sends no push");
        // At rest each push-pull runs once per rest period (30 s for 16 members): 4 per
        // node in the window, where the base periods (1 s, 10 s) would give 120 and 12.
        let rest_runs = (N as usize) * (window.as_secs() as usize / 30 + 1);
        assert!(
            syns <= rest_runs,
            "seed {seed}: {syns} data syns at rest, more than {rest_runs}"
        );
        assert!(
            digests <= rest_runs,
            "seed {seed}: {digests} member digests at rest, more than {rest_runs}"
        );
    });
}

#[test]
fn news_brings_the_push_pulls_back_to_their_base_period() {
    for_each_seed(1..4, |seed| {
        let (mut net, _) = group(seed);
        net.run_for(Duration::from_secs(120));
        net = net.with_send_log();
        net.command(
            p(3),
            Command::Publish {
                req: 1,
                key: "k".into(),
                value: b"v".to_vec(),
            },
        );
        net.take_sent();
        // Every member hears the rumor within a second; each then runs its data exchange
        // at its next base period (1 s) instead of up to 30 s later.
        net.run_for(Duration::from_millis(2500));
        let senders: std::collections::BTreeSet<PeerId> = net
            .take_sent()
            .iter()
            .filter(|s| matches!(s.msg, crate::Message::Syn { .. }))
            .map(|s| s.from)
            .collect();
        assert_eq!(
            senders.len(),
            N as usize,
            "seed {seed}: only {} members synced after the news",
            senders.len()
        );
    });
}

/// A member that missed a joiner's rumor (and every member sync meanwhile) learns of the
/// joiner from the member counts its probes carry within a few probe periods — not at its
/// next member sync, which at rest comes far later.
#[test]
fn a_member_that_missed_a_join_catches_up_from_the_probes_member_counts() {
    for_each_seed(1..4, |seed| {
        let (mut net, mut peers) = group(seed);
        let (straggler, joiner) = (p(5), p(N));
        // While the joiner joins, nothing about membership reaches the straggler.
        net.set_filter(move |s| {
            s.to != straggler
                || !matches!(
                    s.msg,
                    crate::Message::Gossip { .. }
                        | crate::Message::MemberDigest { .. }
                        | crate::Message::MemberDelta { .. }
                )
        });
        net.add(joiner, member(N));
        net.command(joiner, Command::Join { seeds: vec![p(0)] });
        peers.push(joiner);
        let others: Vec<PeerId> = peers.iter().copied().filter(|m| *m != straggler).collect();
        let deadline = net.now() + Duration::from_secs(5);
        assert!(
            net.run_until(deadline, |net| others
                .iter()
                .all(|m| sees_exactly(net, *m, &peers))),
            "seed {seed}: the others did not all see the joiner"
        );
        assert!(
            net.node(&straggler).member(&joiner).is_none(),
            "seed {seed}: the straggler heard of the joiner through the filter"
        );
        // Let the rumor die down, then open the straggler up again.
        let quiet = net.now() + Duration::from_secs(3);
        let _ = net.run_until(quiet, |_| false);
        net.clear_filter();
        // 16 members probe one member a second each, and the straggler probes one itself:
        // counts above its own reach it within a second or two; its digest is answered
        // within a round trip. The member sync alone would take up to 10 s (its period).
        let opened = net.now();
        let deadline = opened + Duration::from_secs(3);
        assert!(
            net.run_until(deadline, |net| net
                .node(&straggler)
                .member(&joiner)
                .is_some_and(|s| s.state.is_up())),
            "seed {seed}: the straggler did not learn of the joiner within 3 s"
        );
    });
}
