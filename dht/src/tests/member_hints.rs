//! Member hints (`core::member_hints`): lookups that start where membership places the key.

use std::time::Duration;

use peerlab_overlay::{Id, PeerId};

use super::{RingNet, cfg, converged_with};
use crate::message::Message;
use crate::{Command, Reply};

/// Hops of lookups for `keys` keys asked at `p` (request ids from `base`).
fn hops(net: &mut super::Net, p: PeerId, base: u64, keys: u64) -> Vec<u32> {
    for k in 0..keys {
        net.command(
            p,
            Command::Lookup {
                req: base + k,
                key: Id::hash(&k.to_be_bytes()),
            },
        );
    }
    net.run_for(Duration::from_secs(10));
    (0..keys)
        .map(|k| match net.reply(base + k) {
            Some(Ok(Reply::Lookup(route))) => {
                let owner = net.ring().successor(&Id::hash(&k.to_be_bytes())).unwrap();
                assert_eq!(route.owner, owner.peer, "lookup {k} found the wrong owner");
                route.hops
            }
            other => panic!("lookup {k}: {other:?}"),
        })
        .collect()
}

#[test]
fn a_lookup_starting_at_a_member_hint_reaches_the_owner_in_one_hop() {
    let (mut net, peers) = converged_with(64, cfg(1));
    let asker = peers[0];
    let before = hops(&mut net, asker, 10_000, 100);
    for p in &peers {
        net.node_mut(&asker).member_up(*p);
    }
    let after = hops(&mut net, asker, 20_000, 100);
    let mean = |h: &[u32]| h.iter().sum::<u32>() as f64 / h.len() as f64;
    // Finger routing in a ring of 64 takes about ½·log2 64 = 3 hops to the key's
    // predecessor, then one to the owner; the hint is the predecessor itself.
    assert!(
        mean(&before) >= mean(&after) + 1.0,
        "finger routing {before:?}, with hints {after:?}"
    );
    assert!(after.iter().all(|&h| h <= 2), "with hints: {after:?}");
}

#[test]
fn a_stale_hint_costs_a_detour_not_a_failed_lookup() {
    let (mut net, peers) = converged_with(32, cfg(1));
    let asker = peers[0];
    for p in &peers {
        net.node_mut(&asker).member_up(*p);
    }
    // Crashed, and still a member as far as the asker's membership knows.
    for dead in [peers[3], peers[9], peers[17]] {
        net.crash(dead);
    }
    // The ring repairs itself; the hints are not told.
    net.run_for(Duration::from_secs(60));
    let h = hops(&mut net, asker, 30_000, 60);
    assert_eq!(h.len(), 60);
    // Members reported down are no longer hints.
    for dead in [peers[3], peers[9], peers[17]] {
        net.node_mut(&asker).member_down(dead);
    }
    let h = hops(&mut net, asker, 40_000, 60);
    assert!(h.iter().all(|&h| h <= 2), "{h:?}");
}

/// Each peer's predecessor and first four successors in the ideal ring.
fn ring_neighbours(net: &super::Net) -> impl Fn(&PeerId) -> Vec<PeerId> + use<> {
    let ring = net.ring();
    move |p: &PeerId| {
        let n = ring.len();
        let i = (0..n).find(|i| ring.nodes()[*i].peer == *p).unwrap();
        let mut v: Vec<PeerId> = ring.successor_list(i, 4).iter().map(|r| r.peer).collect();
        v.push(ring.nodes()[(i + n - 1) % n].peer);
        v
    }
}

/// Requests each peer sends, over `secs` seconds of a ring at rest, to peers that are
/// neither its predecessor nor among its successors.
fn requests_beyond_neighbours(net: &mut super::Net, secs: u64) -> usize {
    let neighbours = ring_neighbours(net);
    net.take_sent();
    net.run_for(Duration::from_secs(secs));
    net.take_sent()
        .iter()
        .filter(|s| !super::is_reply(&s.msg) && !neighbours(&s.from).contains(&s.to))
        .count()
}

#[test]
fn membership_confirms_fingers_so_a_ring_at_rest_talks_only_to_its_neighbours() {
    let (mut net, peers) = super::converge(super::new_net().with_send_log(), 32, cfg(1));
    // Without membership, fix-fingers checks each finger with the finger itself.
    let unhinted = requests_beyond_neighbours(&mut net, 120);
    assert!(unhinted > 0, "fix-fingers sent no finger checks at all");
    for a in &peers {
        for b in &peers {
            net.node_mut(a).member_up(*b);
        }
    }
    let hinted = requests_beyond_neighbours(&mut net, 120);
    assert_eq!(hinted, 0, "with membership (without: {unhinted})");
    assert!(
        peers
            .iter()
            .all(|p| net.node(p).counters().fingers_by_members > 0)
    );
    // A finger that died is no longer confirmed: the ring repairs its fingers as before.
    let dead = peers[7];
    net.crash(dead);
    for p in peers.iter().filter(|p| **p != dead) {
        net.node_mut(p).member_down(dead);
    }
    net.run_for(Duration::from_secs(120));
    net.assert_ideal();
}

/// Lookup steps a peer joining a converged ring of 64 sends in its first minute, with or
/// without the members known.
fn joiner_lookup_steps(with_members: bool) -> usize {
    let (mut net, mut peers) = super::converge(super::new_net().with_send_log(), 64, cfg(1));
    let joiner = PeerId::synthetic(65);
    peers.push(joiner);
    super::add_joining(&mut net, &cfg(1), joiner, 1, peers[0]);
    if with_members {
        for a in &peers {
            for b in &peers {
                net.node_mut(a).member_up(*b);
            }
        }
    }
    net.take_sent();
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();
    net.take_sent()
        .iter()
        .filter(|s| s.from == joiner && matches!(s.msg, Message::FindStep { .. }))
        .count()
}

#[test]
fn a_joiner_takes_its_fingers_from_membership_instead_of_looking_them_up() {
    let alone = joiner_lookup_steps(false);
    let with_members = joiner_lookup_steps(true);
    // Its own join lookup (two steps from a hint) at most; from fingers, a lookup per
    // finger index not covered by the successor list.
    assert!(
        with_members <= 2,
        "{with_members} lookup steps (without members: {alone})"
    );
    assert!(
        alone >= with_members + 3,
        "without members {alone}, with {with_members}"
    );
}

/// Messages each peer sends, over `secs` seconds, to its predecessor or its successors:
/// (full stabilize rounds — state requests that ask for the successor list, and
/// notifies —, repair offers).
fn requests_to_neighbours(net: &mut super::Net, secs: u64) -> (usize, usize) {
    let neighbours = ring_neighbours(net);
    net.take_sent();
    net.run_for(Duration::from_secs(secs));
    let sent = net.take_sent();
    let to_neighbours = |f: fn(&Message) -> bool| {
        sent.iter()
            .filter(|s| f(&s.msg) && neighbours(&s.from).contains(&s.to))
            .count()
    };
    (
        to_neighbours(|m| {
            matches!(
                m,
                Message::GetState {
                    pred_only: false,
                    ..
                } | Message::Notify { .. }
            )
        }),
        to_neighbours(|m| matches!(m, Message::Offer { .. })),
    )
}

/// Every virtual node's predecessor and first successor are the ideal ring's: who owns
/// what. (Deeper successors and fingers that membership confirms may still name a peer it
/// has not seen die, until a full round or membership's own notice.)
fn assert_neighbours_ideal(net: &super::Net) {
    let ring = net.ring();
    for (_, d) in net.cores() {
        for id in d.vnode_ids() {
            let want = ring.view(ring.successor_index(&id), d.config().successors);
            let got = d.vnode(&id).unwrap();
            assert_eq!(got.pred, Some(want.pred), "pred of {id:?}");
            assert_eq!(got.succs.first(), want.succs.first(), "successor of {id:?}");
        }
    }
}

/// Every peer of `peers` learns every other from membership.
fn all_members(net: &mut super::Net, peers: &[PeerId]) {
    for a in peers {
        for b in peers {
            net.node_mut(a).member_up(*b);
        }
    }
}

#[test]
fn membership_settles_a_ring_at_rest_so_neighbours_exchange_a_fifth_as_often() {
    let (mut net, mut peers) = super::converge(super::new_net().with_send_log(), 32, cfg(1));
    // At rest (maintenance backed off) and without membership: Chord's stabilization.
    net.run_for(Duration::from_secs(120));
    let unhinted = requests_to_neighbours(&mut net, 600);
    all_members(&mut net, &peers);
    let hinted = requests_to_neighbours(&mut net, 600);
    // One round in five is a full one: what membership cannot see still gets checked.
    let (with, without) = (hinted.0, unhinted.0);
    assert!(with > 0, "no full stabilize round at all with membership");
    assert!(
        with * 4 <= without,
        "with membership {with} full stabilization messages, without {without}"
    );
    // Repair offers go out as ever, empty ones too (an owner that lost its providers gets
    // them back from its replicas through them).
    assert!(
        hinted.1 * 2 >= unhinted.1,
        "offers {} against {}",
        hinted.1,
        unhinted.1
    );
    assert!(
        peers
            .iter()
            .all(|p| net.node(p).counters().neighbours_by_members > 0)
    );
    // A settled round still checks that the successor is alive: a crash that membership
    // has not noticed yet is repaired as fast as by Chord's own rounds (a period, a
    // timeout and the next predecessor check).
    let dead = peers.remove(3);
    net.crash(dead);
    net.run_for(Duration::from_secs(2));
    assert_neighbours_ideal(&net);
    for p in &peers {
        net.node_mut(p).member_down(dead);
    }
    // What membership reports still reaches the ring at once: a crash …
    let dead = peers.remove(7);
    net.crash(dead);
    for p in &peers {
        net.node_mut(p).member_down(dead);
        net.peer_down(*p, dead);
    }
    net.run_for(Duration::from_secs(30));
    net.assert_ideal();
    // … and a joiner, which announces itself through the ring as in Chord.
    let joiner = PeerId::synthetic(99);
    peers.push(joiner);
    super::add_joining(&mut net, &cfg(1), joiner, 1, peers[0]);
    all_members(&mut net, &peers);
    net.run_for(Duration::from_secs(30));
    net.assert_ideal();
}
