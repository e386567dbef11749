//! The rules against hostile peers, one test (or more) per rule, each with the case a core
//! without the rule gets wrong: signatures, ownership, the skew bound, the hybrid clock,
//! expiry, storage only where it belongs, quotas, providers only from themselves, the
//! provider lifetime cap, back-dated claims, convergence of conflicting first writes on the
//! owner's claim, and the reader's check.

use std::time::Duration;

use peerlab_overlay::{
    Context, Id, Instant, Keypair, Offence, Outbox, Output, PeerId, Protocol, Rng,
};

use super::{Net, Out, RingNet, cfg, ideal, key_of, new_net};
use crate::message::{Message, NodeRef, ProviderEntry, Record, Reject, Step, Version};
use crate::{
    Command, Config, Dht, Error, Event, IdealRing, MAX_CLOCK_SKEW, MAX_PROVIDER_TTL, Reply, Timer,
};

/// Protocol time of [`feed`]: one second, wall clock 1000 ms (offset 0).
const NOW_MS: u64 = 1000;

type Outs = Vec<Output<Message, Timer, Event>>;

/// Feeds one message at protocol time `at` and returns what the core did.
fn feed_at(d: &mut Dht, at: Instant, from: PeerId, msg: Message) -> Outs {
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    d.handle_message(&mut Context::new(at, &mut rng, &mut out), from, msg);
    out.drain().collect()
}

fn feed(d: &mut Dht, from: PeerId, msg: Message) -> Outs {
    feed_at(d, Instant(NOW_MS * 1000), from, msg)
}

fn command(d: &mut Dht, at: Instant, c: Command) -> Outs {
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    d.handle_command(&mut Context::new(at, &mut rng, &mut out), c);
    out.drain().collect()
}

fn offences(out: &Outs) -> Vec<(PeerId, Offence)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Offence { peer, offence } => Some((*peer, *offence)),
            _ => None,
        })
        .collect()
}

/// The answer to a request: `Ok(())` for an acknowledgement, the refusal otherwise.
fn answer(out: &Outs) -> Result<(), Reject> {
    for o in out {
        if let Output::Send { msg, .. } = o {
            match msg {
                Message::Rejected { reason, .. } => return Err(*reason),
                Message::PutAck { .. } | Message::Providers { .. } => return Ok(()),
                _ => {}
            }
        }
    }
    panic!("no answer in {out:?}")
}

fn ver(w: &Keypair, wall_ms: u64) -> Version {
    Version {
        wall_ms,
        logical: 0,
        writer: w.peer_id(),
    }
}

/// A record of `w` under `key` written at `wall_ms`, claimed since `since_ms`, living a day.
fn signed(w: &Keypair, key: Id, value: Option<&[u8]>, wall_ms: u64, since_ms: u64) -> Record {
    Record::sign(
        &key,
        value.map(<[u8]>::to_vec),
        ver(w, wall_ms),
        ver(w, since_ms),
        wall_ms + 24 * 3600 * 1000,
        w,
    )
}

fn put(req: u64, vnode: Id, key: Id, record: Record) -> Message {
    Message::Put {
        req,
        vnode,
        key,
        record,
    }
}

fn store(key: Id, record: Record) -> Message {
    Message::Store {
        records: vec![(key, record)],
        providers: vec![],
    }
}

/// Has `d` take writer `w`'s value `a` for key `v`, written at 900 ms, from `sender`.
fn hold(d: &mut Dht, v: Id, sender: PeerId, w: &Keypair) {
    assert_eq!(
        answer(&feed(
            d,
            sender,
            put(1, v, v, signed(w, v, Some(b"a"), 900, 900))
        )),
        Ok(())
    );
}

/// Two peers, one virtual node each: the first core, its virtual node (a key in its own
/// range) and the other peer (the sender in these tests).
fn pair(c: &Config) -> (Dht, Id, PeerId) {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, c);
    let d = ds.remove(0);
    let v = d.vnode_ids()[0];
    (d, v, peers[1])
}

#[test]
fn forged_and_tampered_records_are_refused_as_forgeries() {
    let (mut d, v, sender) = pair(&cfg(1));
    let w = Keypair::synthetic(5);
    let good = signed(&w, v, Some(b"v"), 900, 900);
    let mut in_w_name = good.clone();
    in_w_name.signature = Keypair::synthetic(6).sign(crate::RECORD_DOMAIN, b"anything");
    let mut value = good.clone();
    value.value = Some(b"x".to_vec());
    let mut version = good.clone();
    version.version.logical += 1;
    let mut expiry = good.clone();
    expiry.expires_ms += 1;
    let mut moved = signed(&w, Id::hash(b"elsewhere"), Some(b"v"), 900, 900);
    moved.value = good.value.clone();
    for (what, bad) in [
        ("signed by another key", in_w_name),
        ("value", value),
        ("version", version),
        ("expiry", expiry),
        ("signed for another key", moved),
    ] {
        let out = feed(&mut d, sender, put(1, v, v, bad.clone()));
        assert_eq!(answer(&out), Err(Reject::BadSignature), "{what}");
        assert_eq!(offences(&out), vec![(sender, Offence::Forged)], "{what}");
        let out = feed(&mut d, sender, store(v, bad));
        assert_eq!(offences(&out), vec![(sender, Offence::Forged)], "{what}");
        assert!(d.store().get(&v).is_none(), "{what} not stored");
    }
    let out = feed(&mut d, sender, put(2, v, v, good.clone()));
    assert_eq!(answer(&out), Ok(()));
    assert!(offences(&out).is_empty());
    assert_eq!(d.store().get(&v), Some(&good));
    assert_eq!(d.counters().forged, 10);
}

#[test]
fn another_writer_can_neither_overwrite_nor_delete_until_expiry() {
    let (mut d, v, sender) = pair(&cfg(1));
    let (a, b) = (Keypair::synthetic(5), Keypair::synthetic(6));
    hold(&mut d, v, sender, &a);
    let owner = a.peer_id();
    // b's newer value and b's delete: refused, reported, not stored.
    for value in [Some(&b"b"[..]), None] {
        let out = feed(&mut d, sender, put(2, v, v, signed(&b, v, value, 990, 990)));
        assert_eq!(answer(&out), Err(Reject::NotOwner { owner }));
        assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    }
    // Relayed copies are refused the same way.
    let out = feed(
        &mut d,
        sender,
        store(v, signed(&b, v, Some(b"b"), 990, 990)),
    );
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    assert_eq!(d.store().get(&v).unwrap().value.as_deref(), Some(&b"a"[..]));
    // The owner overwrites on its claim, then deletes.
    assert_eq!(
        answer(&feed(
            &mut d,
            sender,
            put(3, v, v, signed(&a, v, Some(b"a2"), 950, 900))
        )),
        Ok(())
    );
    assert_eq!(
        answer(&feed(
            &mut d,
            sender,
            put(4, v, v, signed(&a, v, None, 960, 900))
        )),
        Ok(())
    );
    assert_eq!(d.store().get(&v).unwrap().value, None);
    // The owner writing on another claim is told the one held, not refused.
    let out = feed(
        &mut d,
        sender,
        put(5, v, v, signed(&a, v, Some(b"a3"), 970, 970)),
    );
    assert_eq!(
        answer(&out),
        Err(Reject::Outdated {
            since: ver(&a, 900),
            version: ver(&a, 960)
        })
    );
    assert!(offences(&out).is_empty());
}

#[test]
fn an_expired_record_can_be_claimed_by_another_writer() {
    let (mut d, v, sender) = pair(&cfg(1));
    let (a, b) = (Keypair::synthetic(5), Keypair::synthetic(6));
    let short = Record::sign(
        &v,
        Some(b"a".to_vec()),
        ver(&a, 900),
        ver(&a, 900),
        5_000,
        &a,
    );
    assert_eq!(answer(&feed(&mut d, sender, put(1, v, v, short))), Ok(()));
    let claim = |at| signed(&b, v, Some(b"b"), at, at);
    let out = feed_at(
        &mut d,
        Instant(4_000_000),
        sender,
        put(2, v, v, claim(4_000)),
    );
    assert_eq!(answer(&out), Err(Reject::NotOwner { owner: a.peer_id() }));
    let out = feed_at(
        &mut d,
        Instant(5_000_000),
        sender,
        put(3, v, v, claim(5_000)),
    );
    assert_eq!(answer(&out), Ok(()), "expired at 5000 ms");
    assert_eq!(d.store().get(&v).unwrap().writer(), b.peer_id());
}

/// Copies refused only because the sender's view differs (storage outside the receiver's
/// range, another writer's claim relayed) are charged once per spacing: a ring that takes
/// minutes to settle must not add them up to a ban of an honest holder. Each sender has its
/// own spacing, and a write sent to the owner for another writer's key is charged every time.
#[test]
fn view_dependent_refusals_are_charged_once_a_spacing() {
    let c = cfg(1);
    let peers: Vec<PeerId> = (1..=100).map(PeerId::synthetic).collect();
    let mut ds = ideal(&peers, &c);
    let d = &mut ds[0];
    let v = d.vnode_ids()[0];
    let w = Keypair::synthetic(100);
    let far = v.add_pow2(159);
    let spacing = crate::core::VIEW_REFUSAL_SPACING;
    // One refused copy a second for a minute, from two senders.
    let mut charged = Vec::new();
    for s in 0..60u64 {
        let at = Instant(NOW_MS * 1000) + Duration::from_secs(s);
        for sender in [peers[1], peers[2]] {
            let out = feed_at(
                d,
                at,
                sender,
                store(far, signed(&w, far, Some(b"x"), 900, 900)),
            );
            charged.extend(offences(&out).into_iter().map(|o| (s, o)));
        }
    }
    let per_sender = |p: PeerId| charged.iter().filter(|(_, (o, _))| *o == p).count();
    let want = 60usize.div_ceil(spacing.as_secs() as usize);
    assert_eq!(per_sender(peers[1]), want, "{charged:?}");
    assert_eq!(per_sender(peers[2]), want, "{charged:?}");
    assert!(charged.iter().all(|(_, (_, o))| *o == Offence::Refused));
    assert_eq!(d.counters().view_refusals_uncharged, 2 * (60 - want as u64));

    // Another writer's claim: relayed copies are spaced, direct writes are not.
    let (mut d, v, sender) = pair(&c);
    let (a, b) = (Keypair::synthetic(5), Keypair::synthetic(6));
    hold(&mut d, v, sender, &a);
    let theirs = || signed(&b, v, Some(b"b"), 990, 990);
    let relayed: usize = (0..5)
        .map(|_| offences(&feed(&mut d, sender, store(v, theirs()))).len())
        .sum();
    assert_eq!(relayed, 1);
    let direct: usize = (0..5)
        .map(|i| offences(&feed(&mut d, sender, put(2 + i, v, v, theirs()))).len())
        .sum();
    assert_eq!(direct, 5);
}

#[test]
fn versions_too_far_ahead_of_the_receivers_clock_are_refused() {
    let (mut d, v, sender) = pair(&cfg(1));
    let w = Keypair::synthetic(5);
    let skew = MAX_CLOCK_SKEW.as_millis() as u64;
    let ahead = NOW_MS + skew + 1;
    let out = feed(
        &mut d,
        sender,
        put(1, v, v, signed(&w, v, Some(b"x"), ahead, ahead)),
    );
    assert_eq!(answer(&out), Err(Reject::TooFarAhead));
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    let out = feed(
        &mut d,
        sender,
        store(v, signed(&w, v, Some(b"x"), u64::MAX / 2, 1)),
    );
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    assert!(d.store().get(&v).is_none());
    let edge = NOW_MS + skew;
    let out = feed(
        &mut d,
        sender,
        put(2, v, v, signed(&w, v, Some(b"x"), edge, edge)),
    );
    assert_eq!(answer(&out), Ok(()), "at the bound");
}

#[test]
fn a_writer_with_a_slow_clock_still_overwrites_its_own_key() {
    let c = cfg(1);
    let peers: Vec<PeerId> = (1..=3).map(PeerId::synthetic).collect();
    let nodes = peers
        .iter()
        .map(|&peer| NodeRef {
            id: Id::vnode(&peer, 0),
            peer,
        })
        .collect();
    let ring = IdealRing::new(nodes);
    let mut net = new_net();
    for &p in &peers {
        net.add(p, Dht::from_ideal(c.clone(), key_of(&p), &ring).unwrap());
    }
    net.run_for(Duration::from_secs(10));
    let w = peers[0];
    let put = |net: &mut Net, req: u64, v: &[u8]| {
        net.command(
            w,
            Command::Put {
                req,
                key: b"k".to_vec(),
                value: v.to_vec(),
                ttl: None,
            },
        );
        net.run_for(Duration::from_secs(1));
        match net.reply(req) {
            Some(Ok(Reply::Stored { version, .. })) => *version,
            other => panic!("{other:?}"),
        }
    };
    let first = put(&mut net, 1, b"v1");
    // The writer restarts with its clock 50 s slow (within the skew bound): a fresh
    // clock that has seen nothing, behind its own last write.
    let mut fresh = Dht::from_ideal(c.clone(), key_of(&w), &ring).unwrap();
    fresh.set_clock_offset(-50_000_000);
    // Swapped in place: the old core's timers now fire on the fresh one.
    *net.node_mut(&w) = fresh;
    let second = put(&mut net, 2, b"v2");
    assert!(second > first, "{second:?} after {first:?}");
    assert!(second.wall_ms < first.wall_ms + 1000, "not a jump ahead");
    net.command(
        peers[2],
        Command::Get {
            req: 3,
            key: b"k".to_vec(),
        },
    );
    net.run_for(Duration::from_secs(1));
    assert!(
        matches!(net.reply(3), Some(Ok(Reply::Value { value: Some(v), .. })) if v == b"v2"),
        "{:?}",
        net.reply(3)
    );
}

/// `id` minus `n` on the ring.
fn before(id: &Id, n: u64) -> Id {
    id.wrapping_sub(&Id::from_u64(n))
}

#[test]
fn stores_only_for_keys_the_receiver_replicates() {
    let c = cfg(1);
    let peers: Vec<PeerId> = (1..=100).map(PeerId::synthetic).collect();
    let mut ds = ideal(&peers, &c);
    let d = &mut ds[0];
    let v = d.vnode_ids()[0];
    let sender = peers[1];
    let w = Keypair::synthetic(100);
    // Half the ring away: no replica set of 3 among 100 peers reaches from there.
    let far = v.add_pow2(159);
    let out = feed(d, sender, store(far, signed(&w, far, Some(b"x"), 900, 900)));
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    assert!(d.store().get(&far).is_none());
    let out = feed(
        d,
        sender,
        put(1, v, far, signed(&w, far, Some(b"x"), 900, 900)),
    );
    assert_eq!(answer(&out), Err(Reject::NotReplica));
    // In its own range, and just before it (a predecessor's range it replicates).
    let pred = d.vnode(&v).unwrap().pred.unwrap().id;
    for k in [v, before(&pred, 0), before(&pred, 1)] {
        let out = feed(d, sender, store(k, signed(&w, k, Some(b"x"), 900, 900)));
        assert!(offences(&out).is_empty());
        assert!(d.store().get(&k).is_some());
    }
}

#[test]
fn one_writer_cannot_fill_a_peer() {
    let c = Config {
        max_writer_records: 3,
        ..cfg(1)
    };
    let (mut d, v, sender) = pair(&c);
    let hostile = Keypair::synthetic(9);
    let records: Vec<(Id, Record)> = (0..5)
        .map(|i| {
            let k = before(&v, i);
            (k, signed(&hostile, k, Some(b"x"), 900, 900))
        })
        .collect();
    let out = feed(
        &mut d,
        sender,
        Message::Store {
            records,
            providers: vec![],
        },
    );
    // The relay is not the writer: an owner replicating a greedy writer is not charged.
    assert!(offences(&out).is_empty(), "{out:?}");
    assert_eq!(d.stored_keys(), 3);
    assert_eq!(d.store().usage(&hostile.peer_id()).0, 3);
    // The writer pushing its own records past its quota is charged, once per message.
    let more: Vec<(Id, Record)> = (6..8)
        .map(|i| {
            let k = before(&v, i);
            (k, signed(&hostile, k, Some(b"x"), 900, 900))
        })
        .collect();
    let out = feed(
        &mut d,
        hostile.peer_id(),
        Message::Store {
            records: more,
            providers: vec![],
        },
    );
    assert_eq!(
        offences(&out),
        vec![(hostile.peer_id(), Offence::Refused)],
        "one per message"
    );
    assert_eq!(d.stored_keys(), 3);
    // Its own overwrite fits; a Put over the quota is refused with the reason.
    let k = before(&v, 5);
    let out = feed(
        &mut d,
        sender,
        put(1, v, k, signed(&hostile, k, Some(b"x"), 900, 900)),
    );
    assert_eq!(answer(&out), Err(Reject::QuotaExceeded));
    // An honest writer still gets in.
    let honest = Keypair::synthetic(10);
    let out = feed(
        &mut d,
        sender,
        put(2, v, k, signed(&honest, k, Some(b"y"), 900, 900)),
    );
    assert_eq!(answer(&out), Ok(()));
}

fn add_provider(req: u64, vnode: Id, key: Id, entry: ProviderEntry) -> Message {
    Message::AddProvider {
        req,
        vnode,
        key,
        entry,
    }
}

#[test]
fn provider_entries_come_only_from_their_provider() {
    let (mut d, v, sender) = pair(&cfg(1));
    let exp = NOW_MS + 3_600_000;
    // A third party's entry, validly signed by that party: not the sender's to announce.
    let third = ProviderEntry::sign(&v, exp, &Keypair::synthetic(7));
    let out = feed(&mut d, sender, add_provider(1, v, v, third));
    assert_eq!(answer(&out), Err(Reject::BadSignature));
    assert_eq!(offences(&out), vec![(sender, Offence::Forged)]);
    // The sender's name with someone else's signature.
    let mut forged = ProviderEntry::sign(&v, exp, &Keypair::synthetic(7));
    forged.provider = sender;
    let out = feed(&mut d, sender, add_provider(2, v, v, forged));
    assert_eq!(answer(&out), Err(Reject::BadSignature));
    assert!(d.store().providers(&v, NOW_MS).is_empty());
    // Its own entry.
    let own = ProviderEntry::sign(&v, exp, &key_of(&sender));
    assert_eq!(
        answer(&feed(&mut d, sender, add_provider(3, v, v, own))),
        Ok(())
    );
    assert_eq!(d.store().providers(&v, NOW_MS), vec![own]);
    // A replicated set may carry others' entries, but each must verify.
    let relayed = ProviderEntry::sign(&v, exp, &Keypair::synthetic(8));
    let mut bad = relayed;
    bad.expires_ms += 1;
    let out = feed(
        &mut d,
        sender,
        Message::Store {
            records: vec![],
            providers: vec![(v, vec![relayed, bad])],
        },
    );
    assert_eq!(offences(&out), vec![(sender, Offence::Forged)]);
    assert_eq!(d.store().providers(&v, NOW_MS).len(), 2);
}

#[test]
fn provider_lifetimes_are_capped() {
    let (mut d, v, sender) = pair(&cfg(1));
    let k = key_of(&sender);
    let cap = MAX_PROVIDER_TTL.as_millis() as u64;
    let skew = MAX_CLOCK_SKEW.as_millis() as u64;
    let long = ProviderEntry::sign(&v, NOW_MS + cap + skew + 1, &k);
    let out = feed(&mut d, sender, add_provider(1, v, v, long));
    assert_eq!(answer(&out), Err(Reject::TooFarAhead));
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    let ok = ProviderEntry::sign(&v, NOW_MS + cap, &k);
    assert_eq!(
        answer(&feed(&mut d, sender, add_provider(2, v, v, ok))),
        Ok(())
    );
    // A local announcement asking for a day gets the cap.
    let out = command(
        &mut d,
        Instant(NOW_MS * 1000),
        Command::AddProvider {
            req: 3,
            key: Id::hash(b"cid"),
            ttl: Duration::from_secs(24 * 3600),
        },
    );
    let entry = out
        .iter()
        .find_map(|o| match o {
            Output::Send {
                msg: Message::AddProvider { entry, .. },
                ..
            } => Some(*entry),
            _ => None,
        })
        .expect("sent to the owner");
    assert_eq!(entry.expires_ms, NOW_MS + cap);
    assert_eq!(entry.provider, d.peer());
}

/// Three peers, one virtual node each: every peer replicates every key.
fn trio() -> (Net, Vec<PeerId>, IdealRing) {
    let c = cfg(1);
    let peers: Vec<PeerId> = (1..=3).map(PeerId::synthetic).collect();
    let ring = IdealRing::new(
        peers
            .iter()
            .map(|&peer| NodeRef {
                id: Id::vnode(&peer, 0),
                peer,
            })
            .collect(),
    );
    let mut net = new_net();
    for &p in &peers {
        net.add(p, Dht::from_ideal(c.clone(), key_of(&p), &ring).unwrap());
    }
    (net, peers, ring)
}

#[test]
fn a_back_dated_claim_over_a_fresh_write_is_refused() {
    // A peer that saw a fresh write signs a claim of its own dated just before it: the
    // owner refuses it as a put, and a replica refuses it as a relay from a peer that does
    // not hold the key ahead of it. (A rule that let the older claim win while the held one
    // is young would hand the key over.)
    let (mut d, v, sender) = pair(&cfg(1));
    let (a, thief) = (Keypair::synthetic(5), Keypair::synthetic(6));
    hold(&mut d, v, sender, &a);
    let owner = a.peer_id();
    let back_dated = signed(&thief, v, Some(b"stolen"), 899, 899);
    let out = feed(&mut d, sender, put(2, v, v, back_dated.clone()));
    assert_eq!(answer(&out), Err(Reject::NotOwner { owner }));
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    let out = feed(&mut d, sender, store(v, back_dated));
    assert_eq!(offences(&out), vec![(sender, Offence::Refused)]);
    assert_eq!(d.store().get(&v).unwrap().value.as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_stranger_placed_ahead_of_a_key_cannot_contest_its_claim() {
    // A peer outside the ring whose computed virtual node lies just before a key (an
    // identity ground for that, or a lucky one) relays a claim of its own: the replica
    // refuses, as it knows no such ring member. (A rule that trusted computed positions
    // alone would hand over any fresh key to a ground identity.)
    let (mut d, _, _) = pair(&cfg(1));
    let stranger = PeerId::synthetic(77);
    let key = Id::vnode(&stranger, 0).wrapping_sub(&Id::from_u64(1));
    let (a, thief) = (Keypair::synthetic(5), Keypair::synthetic(6));
    let first = signed(&a, key, Some(b"a"), 900, 900);
    d.insert_record(key, first.clone(), Instant(NOW_MS * 1000))
        .unwrap();
    let out = feed(
        &mut d,
        stranger,
        store(key, signed(&thief, key, Some(b"t"), 901, 899)),
    );
    assert_eq!(offences(&out), vec![(stranger, Offence::Refused)]);
    assert_eq!(d.store().get(&key), Some(&first));
}

#[test]
fn conflicting_first_writes_converge_on_the_owners_claim() {
    // The aftermath of a partition (or of two puts that reached two owners while the ring
    // changed): two writers claimed the same key. Every replica ends with the claim the
    // key's owner holds, whichever claim is older and wherever the other is held.
    let (a, b) = (Keypair::synthetic(50), Keypair::synthetic(51));
    for owner_has_older in [true, false] {
        let (mut net, peers, ring) = trio();
        let key = Id::hash(b"k");
        let owner = ring.successor(&key).unwrap().peer;
        let ra = signed(&a, key, Some(b"a"), 2_000, 2_000);
        let rb = signed(&b, key, Some(b"b"), 3_000, 3_000);
        let owners = if owner_has_older { &ra } else { &rb };
        for &p in &peers {
            let r = if (p == owner) == owner_has_older {
                ra.clone()
            } else {
                rb.clone()
            };
            net.node_mut(&p)
                .insert_record(key, r, Instant(3_000_000))
                .unwrap();
        }
        net.run_for(Duration::from_secs(5));
        for (p, d) in net.cores() {
            assert_eq!(
                d.store().get(&key),
                Some(owners),
                "{p:?} (owner holds the older claim: {owner_has_older})"
            );
        }
    }
}

/// The request id of the `Get` among `out` sent to `to`.
fn get_sent_to(out: &Outs, to: PeerId) -> Option<u64> {
    out.iter().find_map(|o| match o {
        Output::Send {
            to: t,
            msg: Message::Get { req, .. },
        } if *t == to => Some(*req),
        _ => None,
    })
}

/// The value a get's reply among `out` returned, if it finished.
fn value_of(out: &Outs, req: u64) -> Option<Option<Vec<u8>>> {
    out.iter().find_map(|o| match o {
        Output::Event(Event::Reply {
            req: r,
            result: Ok(Reply::Value { value, .. }),
        }) if *r == req => Some(value.clone()),
        _ => None,
    })
}

#[test]
fn a_forged_get_reply_is_reported_and_the_get_goes_on_to_the_next_holder() {
    // Three peers, one virtual node each; the reader precedes a key the next peer owns,
    // and the third holds the next copy. The owner answers the get with a forged record
    // and names no replica: the reader reports it and reads from the third instead. (A
    // reader that took the owner's word for who else holds the key would end with a miss.)
    let c = cfg(1);
    let ring = IdealRing::new(
        (1..=3)
            .map(|p| {
                let peer = PeerId::synthetic(p);
                NodeRef {
                    id: Id::vnode(&peer, 0),
                    peer,
                }
            })
            .collect(),
    );
    // In ring order: the reader, the owner, the next holder.
    let peers: Vec<PeerId> = ring.nodes().iter().map(|n| n.peer).collect();
    let key = (0u32..)
        .map(|i| i.to_be_bytes().to_vec())
        .find(|k| ring.successor_index(&Id::hash(k)) == 1)
        .unwrap();
    let id = Id::hash(&key);
    let w = Keypair::synthetic(5);
    let good = signed(&w, id, Some(b"honest"), 900, 900);
    let mut forged = good.clone();
    forged.value = Some(b"forged".to_vec());
    let mut d = ideal(&peers, &c).remove(0);
    let at = Instant(NOW_MS * 1000);
    let out = command(
        &mut d,
        at,
        Command::Get {
            req: 7,
            key: key.clone(),
        },
    );
    let req = get_sent_to(&out, peers[1]).expect("asked the owner");
    let out = feed(
        &mut d,
        peers[1],
        Message::GetReply {
            req,
            record: Some(forged),
            replicas: vec![],
        },
    );
    assert_eq!(offences(&out), vec![(peers[1], Offence::Forged)]);
    assert_eq!(value_of(&out, 7), None, "not over yet");
    let req = get_sent_to(&out, peers[2]).expect("the next holder asked");
    let out = feed(
        &mut d,
        peers[2],
        Message::GetReply {
            req,
            record: Some(good),
            replicas: vec![],
        },
    );
    assert!(offences(&out).is_empty());
    assert_eq!(value_of(&out, 7), Some(Some(b"honest".to_vec())));
}

#[test]
fn without_defenses_the_rules_are_off() {
    let c = Config {
        defenses: false,
        ..cfg(1)
    };
    let (mut d, v, sender) = pair(&c);
    let (a, b) = (Keypair::synthetic(5), Keypair::synthetic(6));
    hold(&mut d, v, sender, &a);
    // Another writer's newer write wins; a third party's provider entry is taken.
    assert_eq!(
        answer(&feed(
            &mut d,
            sender,
            put(2, v, v, signed(&b, v, Some(b"b"), 950, 950))
        )),
        Ok(())
    );
    assert_eq!(d.store().get(&v).unwrap().writer(), b.peer_id());
    let third = ProviderEntry::sign(&v, NOW_MS + 1000, &Keypair::synthetic(7));
    assert_eq!(
        answer(&feed(&mut d, sender, add_provider(3, v, v, third))),
        Ok(())
    );
    // A far-future version locks the key: what the defenses prevent.
    let far = u64::MAX / 2;
    assert_eq!(
        answer(&feed(
            &mut d,
            sender,
            put(4, v, v, signed(&b, v, None, far, far))
        )),
        Ok(())
    );
    let out = feed(
        &mut d,
        sender,
        put(5, v, v, signed(&a, v, Some(b"a"), 990, 990)),
    );
    assert_eq!(
        answer(&out),
        Ok(()),
        "acknowledged, yet the locked record stays"
    );
    assert_eq!(d.store().get(&v).unwrap().version.wall_ms, far);
    assert!(offences(&out).is_empty());
}

#[test]
fn a_real_write_is_refused_to_another_writer_with_the_owner_named() {
    // Through commands end to end, as the CLI sees it.
    let (mut net, peers, _) = trio();
    let put = |net: &mut Net, p: PeerId, req: u64, v: &[u8]| {
        net.command(
            p,
            Command::Put {
                req,
                key: b"x".to_vec(),
                value: v.to_vec(),
                ttl: Some(Duration::from_secs(60)),
            },
        );
        net.run_for(Duration::from_secs(1));
        net.reply(req).cloned()
    };
    assert!(matches!(
        put(&mut net, peers[0], 1, b"1"),
        Some(Ok(Reply::Stored { .. }))
    ));
    assert_eq!(
        put(&mut net, peers[1], 2, b"2"),
        Some(Err(Error::NotOwner { owner: peers[0] }))
    );
    // After the minute it lived, the key is free for anyone.
    net.run_for(Duration::from_secs(60));
    assert!(matches!(
        put(&mut net, peers[1], 3, b"3"),
        Some(Ok(Reply::Stored { .. }))
    ));
}

#[test]
fn a_peer_just_before_a_key_cannot_end_lookups_for_it() {
    // The virtual node just before a key answers every lookup step for it with "the owner
    // is me" (the position a ground identity takes). Every lookup still ends at the true
    // owner, and the liar is reported by whoever it answered. (A lookup that took the
    // last answer as final would end at the liar.)
    let c = cfg(2);
    let peers: Vec<PeerId> = (1..=8).map(PeerId::synthetic).collect();
    let mut net = new_net();
    for (p, d) in peers.iter().zip(ideal(&peers, &c)) {
        net.add(*p, d);
    }
    let ring = net.ring();
    let n = ring.nodes().to_vec();
    let (key, liar, owner) = (0u32..)
        .map(|i| Id::hash(&i.to_be_bytes()))
        .map(|k| {
            let i = ring.successor_index(&k);
            (k, n[(i + n.len() - 1) % n.len()], n[i])
        })
        .find(|(_, liar, owner)| liar.peer != owner.peer)
        .unwrap();
    net.set_tap(move |m| match &m.msg {
        Message::FindStep { req, key: k, .. } if m.to == liar.peer && *k == key => {
            let step = Step::Done {
                pred: liar,
                owner: liar,
            };
            vec![(liar.peer, m.from, Message::StepReply { req: *req, step })]
        }
        _ => vec![],
    });
    let readers: Vec<PeerId> = peers.iter().copied().filter(|p| *p != liar.peer).collect();
    for (j, r) in readers.iter().enumerate() {
        net.command(
            *r,
            Command::Lookup {
                req: 100 + j as u64,
                key,
            },
        );
    }
    net.run_for(Duration::from_secs(2));
    for j in 0..readers.len() as u64 {
        assert!(
            matches!(net.reply(100 + j), Some(Ok(Reply::Lookup(r))) if r.owner == owner.peer && r.vnode == owner.id),
            "reader {j}: {:?}",
            net.reply(100 + j)
        );
    }
    let reported: Vec<(PeerId, Offence)> = net
        .offences()
        .iter()
        .map(|(_, _, offender, o)| (*offender, *o))
        .collect();
    assert!(!reported.is_empty(), "the liar was asked");
    assert!(
        reported
            .iter()
            .all(|r| *r == (liar.peer, Offence::Malformed)),
        "{reported:?}"
    );
}
