//! The vulnerability window and reads: a death is acted on when it is detected, and a get
//! returns the newest version its replicas hold and repairs the others.

use std::time::Duration;

use peerlab_overlay::{Id, PeerId};

use super::{Net, RingNet, ideal, key_of, new_net};
use crate::message::{NodeRef, Record, Version};
use crate::{Command, Config, Reply};

/// Fixed periods (no jitter), so each test knows when every periodic task runs: stabilize
/// and fix-fingers are far off, so only the rule under test can act in the window checked.
fn cfg(repair_secs: u64, check_pred_secs: u64) -> Config {
    Config {
        vnodes: 1,
        successors: 4,
        replicas: 3,
        stabilize_period: Duration::from_secs(60),
        fix_fingers_period: Duration::from_secs(60),
        check_predecessor_period: Duration::from_secs(check_pred_secs),
        repair_period: Duration::from_secs(repair_secs),
        jitter: 0.0,
        request_timeout: Duration::from_millis(300),
        max_value_size: 16,
        ..Config::default()
    }
}

/// A converged ring of six peers; the peers in ring order.
fn ring_of_six(c: &Config) -> (Net, Vec<PeerId>) {
    let peers: Vec<PeerId> = (1..=6).map(PeerId::synthetic).collect();
    let mut net = new_net();
    for (p, d) in peers.iter().zip(ideal(&peers, c)) {
        net.add(*p, d);
    }
    let mut order = peers;
    order.sort_by_key(|p| Id::vnode(p, 0));
    (net, order)
}

fn at(p: PeerId) -> NodeRef {
    NodeRef {
        id: Id::vnode(&p, 0),
        peer: p,
    }
}

/// A record for ring id `key` written by peer 1 at `wall_ms`.
fn record(key: &Id, value: &[u8], wall_ms: u64) -> Record {
    let writer = PeerId::synthetic(1);
    let v = Version {
        wall_ms,
        logical: 0,
        writer,
    };
    Record::sign(key, Some(value.to_vec()), v, v, 3_600_000, &key_of(&writer))
}

fn holds(net: &Net, p: PeerId, key: &Id) -> bool {
    net.node(&p).store().get(key).is_some()
}

/// Places a record of the range of `ring[owner]` on it and its two replicas.
fn place(net: &mut Net, ring: &[PeerId], owner: usize) -> Id {
    let key = Id::vnode(&ring[owner], 0);
    let rec = record(&key, b"v", 1);
    for i in owner..owner + 3 {
        let now = net.now();
        let d = net.node_mut(&ring[i % ring.len()]);
        d.insert_record(key, rec.clone(), now).unwrap();
    }
    key
}

/// A replica whose repair digest times out is replaced at once: the owner offers its range
/// to the next live successor when it evicts the dead one, not a repair period later.
#[test]
fn a_dead_replica_is_replaced_as_soon_as_its_digest_times_out() {
    let (mut net, ring) = ring_of_six(&cfg(10, 60));
    let key = place(&mut net, &ring, 0);
    net.run_for(Duration::from_secs(1));
    net.crash(ring[1]);
    // The owner's repair digest goes out at 10 s and times out at 10.3 s; the next repair
    // round would be at 20 s.
    net.run_for(Duration::from_secs(9));
    assert!(
        !holds(&net, ring[3], &key),
        "nothing moves before detection"
    );
    net.run_for(Duration::from_secs(1));
    assert!(
        holds(&net, ring[3], &key),
        "the next live successor holds the owner's range within a round trip of detection"
    );
    assert!(net.node(&ring[0]).counters().prompt_repairs >= 1);
}

/// A successor takes over its dead predecessor's range the moment a request to it times
/// out: the predecessor's predecessor (from the last check) becomes its predecessor, and
/// the range goes to the replica that lacked it.
#[test]
fn a_successor_takes_over_a_dead_owner_range_on_timeout() {
    let (mut net, ring) = ring_of_six(&cfg(60, 5));
    let key = place(&mut net, &ring, 1);
    // The check at 5 s tells ring[2] who precedes its predecessor.
    net.run_for(Duration::from_secs(6));
    net.crash(ring[1]);
    // The check at 10 s times out at 10.3 s.
    net.run_for(Duration::from_secs(4));
    assert_eq!(
        net.node(&ring[2]).vnode(&at(ring[2]).id).unwrap().pred,
        Some(at(ring[1]))
    );
    net.run_for(Duration::from_millis(500));
    let s1 = net.node(&ring[2]).vnode(&at(ring[2]).id).unwrap();
    assert_eq!(
        s1.pred,
        Some(at(ring[0])),
        "the dead owner's predecessor adopted"
    );
    assert!(
        holds(&net, ring[4], &key),
        "the new third replica holds the dead owner's keys before any stabilize"
    );
}

/// The owner of a range that notices its successor dead tells the next successor at once;
/// that one checks its predecessor there and then, and takes the range over on the
/// timeout — long before its own check-predecessor tick.
#[test]
fn a_notify_past_a_dead_predecessor_hands_its_range_over() {
    let (mut net, ring) = ring_of_six(&cfg(10, 60));
    let key = place(&mut net, &ring, 1);
    net.run_for(Duration::from_secs(1));
    net.crash(ring[1]);
    // ring[0]'s digest to ring[1] times out at 10.3 s; the notify and check follow.
    net.run_for(Duration::from_secs(10));
    let s1 = net.node(&ring[2]).vnode(&at(ring[2]).id).unwrap();
    assert_eq!(
        s1.pred,
        Some(at(ring[0])),
        "taken over at 10.6 s, not at 60 s"
    );
    assert!(holds(&net, ring[4], &key));
    assert!(holds(&net, ring[3], &key));
}

/// A get consults the owner and its replicas, returns the newest version any of them
/// holds, and pushes it to the holders that answered older (here the owner itself).
#[test]
fn a_read_returns_the_newest_version_and_repairs_the_stale_holders() {
    let (mut net, ring) = ring_of_six(&cfg(60, 60));
    let writer = PeerId::synthetic(1);
    net.command(
        writer,
        Command::Put {
            req: 1,
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
            ttl: None,
        },
    );
    net.run_for(Duration::from_millis(10));
    let Some(Ok(Reply::Stored { route, version: v1 })) = net.reply(1).cloned() else {
        panic!("{:?}", net.reply(1));
    };
    let key = Id::hash(b"k");
    let owner = ring.iter().position(|p| *p == route.owner).unwrap();
    let replicas = [ring[(owner + 1) % 6], ring[(owner + 2) % 6]];
    assert!(replicas.iter().all(|r| holds(&net, *r, &key)));
    // The update reached the last replica only (the owner and the first replica lost it).
    let v2 = Version {
        wall_ms: v1.wall_ms + 1,
        ..v1
    };
    let newer = Record::sign(
        &key,
        Some(b"v2".to_vec()),
        v2,
        v1,
        3_600_000,
        &key_of(&writer),
    );
    let now = net.now();
    net.node_mut(&replicas[1])
        .insert_record(key, newer, now)
        .unwrap();
    let reader = *ring
        .iter()
        .find(|p| **p != route.owner && !replicas.contains(p))
        .unwrap();
    net.command(
        reader,
        Command::Get {
            req: 2,
            key: b"k".to_vec(),
        },
    );
    net.run_for(Duration::from_millis(10));
    let Some(Ok(Reply::Value { value, version, .. })) = net.reply(2).cloned() else {
        panic!("{:?}", net.reply(2));
    };
    assert_eq!(value.as_deref(), Some(&b"v2"[..]), "the newest version");
    assert_eq!(version, Some(v2));
    for p in [route.owner, replicas[0]] {
        assert_eq!(
            net.node(&p).store().get(&key).map(|r| r.version),
            Some(v2),
            "read repair of {p:?}"
        );
    }
    assert_eq!(net.node(&reader).counters().read_repairs, 2);
}

/// A read whose replica is dead still answers (with what the others hold) once the
/// request to it times out.
#[test]
fn a_read_past_a_dead_replica_answers_after_the_timeout() {
    let (mut net, ring) = ring_of_six(&cfg(60, 60));
    let key = place(&mut net, &ring, 2);
    net.crash(ring[4]);
    // A key of ring[2]'s range whose bytes we know: look one up by trying key names.
    let name = (0u32..)
        .map(|i| format!("k{i}").into_bytes())
        .find(|n| Id::hash(n).in_half_open(&at(ring[1]).id, &key))
        .unwrap();
    let id = Id::hash(&name);
    let rec = record(&id, b"x", 1);
    for p in [ring[2], ring[3]] {
        let now = net.now();
        net.node_mut(&p)
            .insert_record(id, rec.clone(), now)
            .unwrap();
    }
    net.command(ring[0], Command::Get { req: 7, key: name });
    net.run_for(Duration::from_millis(100));
    assert!(net.reply(7).is_none(), "waits for the silent replica");
    net.run_for(Duration::from_millis(400));
    assert!(
        matches!(net.reply(7), Some(Ok(Reply::Value { value: Some(v), .. })) if v == b"x"),
        "{:?}",
        net.reply(7)
    );
}
