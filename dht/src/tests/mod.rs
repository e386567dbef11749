//! Unit tests of the core: bad input fed to one core by hand, and rings of a few cores on
//! the shared test harness ([`peerlab_sim::testing::Net`]) for join, stabilize, storage,
//! leave and crashes.

mod heal;
mod member_hints;
mod rtt;
mod rules;
mod window;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use peerlab_overlay::{Context, Id, Instant, Keypair, Outbox, Output, PeerId, Protocol, Rng};

use crate::message::{MAX_SUCCESSORS, Message, NodeRef, Record, Reject, Version};
use crate::{Command, Config, Dht, Error, Event, IdealRing, Reply, Timer};

type Out = Outbox<Message, Timer, Event>;

fn cfg(vnodes: u16) -> Config {
    Config {
        vnodes,
        successors: 4,
        stabilize_period: Duration::from_secs(1),
        fix_fingers_period: Duration::from_secs(1),
        check_predecessor_period: Duration::from_secs(1),
        repair_period: Duration::from_secs(1),
        request_timeout: Duration::from_millis(300),
        max_value_size: 16,
        ..Config::default()
    }
}

/// The key pair of synthetic peer `p` (`PeerId::synthetic(n)` for a small `n`).
pub(crate) fn key_of(p: &PeerId) -> Keypair {
    (0..1000)
        .map(Keypair::synthetic)
        .find(|k| k.peer_id() == *p)
        .expect("a synthetic peer")
}

/// A fresh core for synthetic peer `p`.
pub(crate) fn dht(c: &Config, p: PeerId) -> Dht {
    Dht::new(c.clone(), key_of(&p)).unwrap()
}

/// The ideal ring of `peers`' virtual nodes.
fn ideal_ring(peers: &[PeerId], c: &Config) -> IdealRing {
    let nodes = peers
        .iter()
        .flat_map(|&peer| {
            (0..c.vnodes).map(move |i| NodeRef {
                id: Id::vnode(&peer, i),
                peer,
            })
        })
        .collect();
    IdealRing::new(nodes)
}

fn ideal(peers: &[PeerId], c: &Config) -> Vec<Dht> {
    let ring = ideal_ring(peers, c);
    peers
        .iter()
        .map(|p| Dht::from_ideal(c.clone(), key_of(p), &ring).unwrap())
        .collect()
}

/// Feeds one message and returns what the core sent back.
fn feed(d: &mut Dht, from: PeerId, msg: Message) -> Vec<Output<Message, Timer, Event>> {
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    d.handle_message(
        &mut Context::new(Instant(1_000_000), &mut rng, &mut out),
        from,
        msg,
    );
    out.drain().collect()
}

fn rejected(out: &[Output<Message, Timer, Event>]) -> Option<Reject> {
    out.iter().find_map(|o| match o {
        Output::Send {
            msg: Message::Rejected { reason, .. },
            ..
        } => Some(*reason),
        _ => None,
    })
}

#[test]
fn unknown_vnode_is_rejected_and_counted() {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, &cfg(2));
    let d = &mut ds[0];
    let bogus = Id::from_u64(12345);
    let out = feed(
        d,
        peers[1],
        Message::GetState {
            req: 7,
            vnode: bogus,
            pred_only: false,
        },
    );
    assert_eq!(rejected(&out), Some(Reject::UnknownVnode));
    let out = feed(
        d,
        peers[1],
        Message::FindStep {
            req: 8,
            vnode: Some(bogus),
            key: bogus,
        },
    );
    assert_eq!(rejected(&out), Some(Reject::UnknownVnode));
    feed(
        d,
        peers[1],
        Message::Notify {
            vnode: bogus,
            from: NodeRef {
                id: bogus,
                peer: peers[1],
            },
        },
    );
    assert_eq!(d.counters().unknown_vnode, 3);
    assert_eq!(d.finger(&bogus, 0), Err(Error::UnknownVnode(bogus)));
}

#[test]
fn absurd_finger_index_is_rejected_and_counted() {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, &cfg(2));
    let d = &mut ds[0];
    let v = d.vnode_ids()[0];
    let out = feed(
        d,
        peers[1],
        Message::GetFingers {
            req: 1,
            vnode: v,
            from_index: 160,
        },
    );
    assert_eq!(rejected(&out), Some(Reject::BadFingerIndex));
    let out = feed(
        d,
        peers[1],
        Message::GetFingers {
            req: 2,
            vnode: v,
            from_index: u16::MAX,
        },
    );
    assert_eq!(rejected(&out), Some(Reject::BadFingerIndex));
    assert_eq!(d.counters().bad_finger_index, 2);
    assert_eq!(d.finger(&v, 999), Err(Error::BadFingerIndex(999)));
    // A valid request is answered with runs in range.
    let out = feed(
        d,
        peers[1],
        Message::GetFingers {
            req: 3,
            vnode: v,
            from_index: 0,
        },
    );
    assert!(out.iter().any(|o| matches!(o, Output::Send { msg: Message::Fingers { req: 3, runs }, .. } if runs.iter().all(|(i, _)| *i < 160))));
}

#[test]
fn oversized_value_is_rejected_counted_and_not_stored() {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let v = d.vnode_ids()[0];
    let w = key_of(&peers[1]);
    let version = Version {
        wall_ms: 5,
        logical: 0,
        writer: peers[1],
    };
    let big = Record::sign(
        &Id::from_u64(1),
        Some(vec![0; 17]),
        version,
        version,
        3_600_000,
        &w,
    );
    let out = feed(
        d,
        peers[1],
        Message::Put {
            req: 1,
            vnode: v,
            key: Id::from_u64(1),
            record: big.clone(),
        },
    );
    assert_eq!(rejected(&out), Some(Reject::ValueTooLarge));
    feed(
        d,
        peers[1],
        Message::Store {
            records: vec![(Id::from_u64(2), big)],
            providers: vec![],
        },
    );
    assert_eq!(d.counters().oversized_value, 2);
    assert_eq!(d.stored_keys(), 0);
    // The same through a local command: a typed error, no lookup started.
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    d.handle_command(
        &mut Context::new(Instant::ZERO, &mut rng, &mut out),
        Command::Put {
            req: 9,
            key: b"k".to_vec(),
            value: vec![0; 17],
            ttl: None,
        },
    );
    let evs: Vec<_> = out.drain().collect();
    assert_eq!(evs.len(), 1);
    assert!(matches!(
        &evs[0],
        Output::Event(Event::Reply {
            req: 9,
            result: Err(Error::ValueTooLarge { len: 17, max: 16 })
        })
    ));
}

#[test]
fn over_long_lists_and_stray_replies_are_counted_not_trusted() {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let before = d.vnode(&d.vnode_ids()[0]).unwrap();
    // A reply nobody asked for.
    feed(
        d,
        peers[1],
        Message::State {
            req: 424242,
            pred: None,
            succs: vec![],
        },
    );
    assert_eq!(d.counters().unexpected_reply, 1);
    // A leave notice with an absurd successor list.
    let n = NodeRef {
        id: Id::from_u64(3),
        peer: peers[1],
    };
    let succs = vec![n; MAX_SUCCESSORS + 1];
    feed(
        d,
        peers[1],
        Message::Leaving {
            vnode: before.id,
            leaving: n,
            pred: None,
            succs,
        },
    );
    assert_eq!(d.counters().malformed, 1);
    // A notify claiming to come from another peer's node.
    let other = NodeRef {
        id: Id::from_u64(4),
        peer: PeerId::synthetic(77),
    };
    feed(
        d,
        peers[1],
        Message::Notify {
            vnode: before.id,
            from: other,
        },
    );
    assert_eq!(d.counters().malformed, 2);
    assert_eq!(d.vnode(&before.id).unwrap(), before, "state unchanged");
    // An offer with too many digest entries.
    let digest = vec![
        (
            Id::ZERO,
            Version {
                wall_ms: 0,
                logical: 0,
                writer: peers[1]
            },
            Version {
                wall_ms: 0,
                logical: 0,
                writer: peers[1]
            }
        );
        crate::message::MAX_BATCH_ENTRIES + 1
    ];
    let out = feed(
        d,
        peers[1],
        Message::Offer {
            req: 1,
            from: Id::ZERO,
            to: Id::ZERO,
            digest,
            providers: vec![],
        },
    );
    assert_eq!(rejected(&out), Some(Reject::Malformed));
}

/// A reply that comes after its request timed out (a peer that was frozen or cut off
/// delivering its backlog) is dropped but not charged; a reply to a request id never
/// issued is.
#[test]
fn late_replies_are_dropped_uncharged_and_unissued_ones_charged() {
    let peers = [PeerId::synthetic(1), PeerId::synthetic(2)];
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let offences = |out: &[Output<Message, Timer, Event>]| {
        out.iter()
            .filter(|o| matches!(o, Output::Offence { .. }))
            .count()
    };
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    let now = Instant(1_000_000);
    // Gets until one of them asks the other peer something.
    let mut asked = None;
    for i in 0..64u64 {
        d.handle_command(
            &mut Context::new(now, &mut rng, &mut out),
            Command::Get {
                req: 1000 + i,
                key: format!("k{i}").into_bytes(),
            },
        );
        let outs: Vec<_> = out.drain().collect();
        asked = outs.iter().find_map(|o| match o {
            Output::Timer {
                timer: Timer::Request(r),
                ..
            } => Some(*r),
            _ => None,
        });
        if asked.is_some() {
            break;
        }
    }
    let req = asked.expect("some get asks the other peer");
    d.handle_timer(
        &mut Context::new(now, &mut rng, &mut out),
        Timer::Request(req),
    );
    out.drain().for_each(drop);
    let before = d.counters().unexpected_reply;
    let late = feed(
        d,
        peers[1],
        Message::State {
            req,
            pred: None,
            succs: vec![],
        },
    );
    assert_eq!(offences(&late), 0, "a late reply is not an offence");
    assert_eq!(
        d.counters().unexpected_reply,
        before + 1,
        "but it is counted"
    );
    let stray = feed(
        d,
        peers[1],
        Message::State {
            req: req + 1_000_000,
            pred: None,
            succs: vec![],
        },
    );
    assert_eq!(offences(&stray), 1, "a reply to nothing ever asked is");
}

#[test]
fn requests_before_joining_are_refused() {
    let p = PeerId::synthetic(1);
    let mut d = dht(&cfg(2), p);
    let v = d.vnode_ids()[0];
    let out = feed(
        &mut d,
        PeerId::synthetic(2),
        Message::GetState {
            req: 1,
            vnode: v,
            pred_only: false,
        },
    );
    assert_eq!(rejected(&out), Some(Reject::NotJoined));
    let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
    d.handle_command(
        &mut Context::new(Instant::ZERO, &mut rng, &mut out),
        Command::Lookup {
            req: 1,
            key: Id::ZERO,
        },
    );
    assert!(out.drain().any(|o| matches!(
        o,
        Output::Event(Event::Reply {
            req: 1,
            result: Err(Error::NotJoined)
        })
    )));
}

#[test]
fn config_validation() {
    assert!(Config::default().validate().is_ok());
    assert_eq!(Config::default().successors, 20);
    assert_eq!(Config::for_network(100_000).successors, 32, "capped");
    assert_eq!(Config::for_network(1000).successors, 20);
    assert_eq!(Config::for_network(2).successors, 2);
    assert!(
        Config {
            vnodes: 0,
            ..Config::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        Config {
            successors: 33,
            ..Config::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        Config {
            jitter: 1.0,
            ..Config::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        Dht::new(
            Config {
                replicas: 0,
                ..Config::default()
            },
            Keypair::synthetic(1)
        )
        .is_err()
    );
}

/// The test network: [`peerlab_sim::testing::Net`] of DHT cores, messages delivered at
/// once (before any timer due at the same instant), timers by deadline.
type Net = peerlab_sim::testing::Net<Dht>;

/// The seed of every network test here: each core's random source is forked from it.
const SEED: u64 = 3;

fn new_net() -> Net {
    Net::new(SEED)
}

/// Whether a message answers a request (goes back to whoever asked) rather than starting
/// an exchange.
fn is_reply(msg: &Message) -> bool {
    matches!(
        msg,
        Message::State { .. }
            | Message::StepReply { .. }
            | Message::Fingers { .. }
            | Message::PutAck { .. }
            | Message::GetReply { .. }
            | Message::Providers { .. }
            | Message::Want { .. }
            | Message::HandoffAck { .. }
            | Message::Rejected { .. }
    )
}

/// What the ring tests ask of a net of DHT cores.
trait RingNet {
    /// The latest answer to request `req`, from any peer.
    fn reply(&self, req: u64) -> Option<&Result<Reply, Error>>;
    /// The ideal ring of the joined peers' virtual nodes.
    fn ring(&self) -> IdealRing;
    /// Whether every vnode's first successor and predecessor are the ideal ones.
    fn neighbours_ideal(&self) -> bool;
    /// Asserts that every vnode's predecessor, successor list and fingers are ideal.
    fn assert_ideal(&self);
}

impl RingNet for Net {
    fn reply(&self, req: u64) -> Option<&Result<Reply, Error>> {
        self.events()
            .iter()
            .rev()
            .find_map(|(_, _, Event::Reply { req: r, result })| (*r == req).then_some(result))
    }

    fn ring(&self) -> IdealRing {
        IdealRing::new(
            self.cores()
                .filter(|(_, d)| d.is_joined())
                .flat_map(|(p, d)| {
                    d.vnode_ids()
                        .into_iter()
                        .map(move |id| NodeRef { id, peer: p })
                })
                .collect(),
        )
    }

    fn neighbours_ideal(&self) -> bool {
        let ring = self.ring();
        self.cores().all(|(_, d)| {
            d.is_joined()
                && d.vnode_ids().iter().all(|id| {
                    let want = ring.view(ring.successor_index(id), 1);
                    let got = d.vnode(id).unwrap();
                    got.pred == Some(want.pred) && got.succs.first() == want.succs.first()
                })
        })
    }

    fn assert_ideal(&self) {
        let ring = self.ring();
        for (_, d) in self.cores() {
            assert!(d.is_joined());
            for id in d.vnode_ids() {
                let i = ring.successor_index(&id);
                let want = ring.view(i, d.config().successors);
                let got = d.vnode(&id).unwrap();
                assert_eq!(got.pred, Some(want.pred), "pred of {id:?}");
                assert_eq!(got.succs, want.succs, "successors of {id:?}");
                for f in 0..160 {
                    assert_eq!(
                        got.fingers[f],
                        Some(ring.finger(i, f)),
                        "finger {f} of {id:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn single_peer_ring_answers_locally() {
    let p = PeerId::synthetic(1);
    let mut net = new_net();
    net.add(p, dht(&cfg(3), p));
    net.command(
        p,
        Command::Join {
            req: 1,
            bootstrap: vec![],
        },
    );
    assert_eq!(net.reply(1), Some(&Ok(Reply::Joined)));
    net.command(
        p,
        Command::Lookup {
            req: 2,
            key: Id::from_u64(99),
        },
    );
    let Some(Ok(Reply::Lookup(route))) = net.reply(2) else {
        panic!("{:?}", net.reply(2))
    };
    assert_eq!(
        (route.owner, route.hops),
        (p, 0),
        "own vnodes are free hops"
    );
    net.command(
        p,
        Command::Put {
            req: 3,
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            ttl: None,
        },
    );
    net.command(
        p,
        Command::Get {
            req: 4,
            key: b"a".to_vec(),
        },
    );
    assert!(matches!(net.reply(4), Some(Ok(Reply::Value { value: Some(v), .. })) if v == b"1"));
    assert_eq!(net.in_flight(), 0, "a lone peer sends nothing to itself");
    net.run_for(Duration::from_secs(5));
    net.assert_ideal();
    assert_eq!(net.node(&p).rtt_estimate(&p), None, "nor times its answers");
}

#[test]
fn peers_join_converge_store_and_leave() {
    let mut net = new_net();
    let peers: Vec<PeerId> = (1..=6).map(PeerId::synthetic).collect();
    for (i, &p) in peers.iter().enumerate() {
        net.add(p, dht(&cfg(3), p));
        let bootstrap = if i == 0 { vec![] } else { vec![peers[i / 2]] };
        net.command(
            p,
            Command::Join {
                req: 100 + i as u64,
                bootstrap,
            },
        );
        net.run_for(Duration::from_millis(500));
        assert_eq!(
            net.reply(100 + i as u64),
            Some(&Ok(Reply::Joined)),
            "peer {i}"
        );
    }
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();

    // Storage: put; another writer's overwrite and delete are refused; the writer
    // overwrites; get from another peer; the writer deletes.
    let put = |net: &mut Net, p: PeerId, req: u64, v: &[u8]| {
        net.command(
            p,
            Command::Put {
                req,
                key: b"k".to_vec(),
                value: v.to_vec(),
                ttl: None,
            },
        );
        net.run_for(Duration::from_millis(10));
    };
    let get = |net: &mut Net, p: PeerId, req: u64| {
        net.command(
            p,
            Command::Get {
                req,
                key: b"k".to_vec(),
            },
        );
        net.run_for(Duration::from_millis(10));
        match net.reply(req) {
            Some(Ok(Reply::Value { value, .. })) => value.clone(),
            other => panic!("{other:?}"),
        }
    };
    put(&mut net, peers[0], 1, b"v1");
    put(&mut net, peers[3], 2, b"v2");
    assert_eq!(
        net.reply(2),
        Some(&Err(Error::NotOwner { owner: peers[0] })),
        "another writer's put"
    );
    net.command(
        peers[1],
        Command::Delete {
            req: 20,
            key: b"k".to_vec(),
        },
    );
    net.run_for(Duration::from_millis(10));
    assert_eq!(
        net.reply(20),
        Some(&Err(Error::NotOwner { owner: peers[0] })),
        "another writer's delete"
    );
    assert_eq!(get(&mut net, peers[5], 21), Some(b"v1".to_vec()));
    put(&mut net, peers[0], 22, b"v3");
    assert!(matches!(net.reply(22), Some(Ok(Reply::Stored { .. }))));
    assert_eq!(get(&mut net, peers[5], 3), Some(b"v3".to_vec()));
    let holders = net
        .cores()
        .filter(|(_, d)| d.store().get(&Id::hash(b"k")).is_some())
        .count();
    assert_eq!(holders, 3, "owner plus R-1 replicas");
    net.command(
        peers[0],
        Command::Delete {
            req: 4,
            key: b"k".to_vec(),
        },
    );
    net.run_for(Duration::from_millis(10));
    net.command(
        peers[2],
        Command::Get {
            req: 5,
            key: b"k".to_vec(),
        },
    );
    net.run_for(Duration::from_millis(10));
    assert!(
        matches!(
            net.reply(5),
            Some(Ok(Reply::Value {
                value: None,
                version: Some(_),
                ..
            }))
        ),
        "{:?}",
        net.reply(5)
    );
    assert!(
        net.offences()
            .iter()
            .all(|(_, _, _, o)| *o == peerlab_overlay::Offence::Refused),
        "only the refused writes are offences: {:?}",
        net.offences()
    );

    // Providers.
    let cid = Id::hash(b"content");
    net.command(
        peers[4],
        Command::AddProvider {
            req: 6,
            key: cid,
            ttl: Duration::from_secs(600),
        },
    );
    net.run_for(Duration::from_millis(10));
    net.command(peers[0], Command::GetProviders { req: 7, key: cid });
    net.run_for(Duration::from_millis(10));
    assert!(
        matches!(net.reply(7), Some(Ok(Reply::Providers { providers, .. })) if providers.len() == 1 && providers[0].provider == peers[4])
    );

    // Many keys, then the owner of one leaves gracefully: nothing is lost.
    for k in 0..50u32 {
        net.command(
            peers[(k % 6) as usize],
            Command::Put {
                req: 1000 + k as u64,
                key: k.to_be_bytes().to_vec(),
                value: vec![1],
                ttl: None,
            },
        );
    }
    net.run_for(Duration::from_secs(5));
    let leaver = peers[2];
    net.command(leaver, Command::Leave { req: 8 });
    assert_eq!(net.reply(8), Some(&Ok(Reply::Left)));
    // Its goodbyes reach the others; then it is gone.
    net.drive();
    net.crash(leaver);
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();
    for k in 0..50u32 {
        let id = Id::hash(&k.to_be_bytes());
        let n = net
            .cores()
            .filter(|(_, d)| d.store().get(&id).is_some())
            .count();
        assert!(n >= 3, "key {k} on {n} peers");
    }
    // A crash: the ring heals and keys are re-replicated.
    let crashed = peers[4];
    net.crash(crashed);
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();
    for k in 0..50u32 {
        let id = Id::hash(&k.to_be_bytes());
        let n = net
            .cores()
            .filter(|(_, d)| d.store().get(&id).is_some())
            .count();
        assert!(n >= 3, "key {k} on {n} peers after a crash");
    }
    net.command(
        peers[0],
        Command::Lookup {
            req: 9,
            key: Id::from_u64(5),
        },
    );
    net.run_for(Duration::from_secs(1));
    let Some(Ok(Reply::Lookup(route))) = net.reply(9) else {
        panic!("{:?}", net.reply(9))
    };
    assert_eq!(
        Some(route.vnode),
        net.ring().successor(&Id::from_u64(5)).map(|n| n.id)
    );
}

/// A peer that crashes and restarts at once (same key, so the same vnode ids) finds itself
/// still listed in everyone's tables: its join lookups end at its own stale entries. It
/// must join anyway, through the predecessor's successor list, and the ring must converge.
/// Builds a converged ring of `n` peers with `vnodes` virtual nodes each, peer 1 first.
fn converged(n: u64, vnodes: u16) -> (Net, Vec<PeerId>) {
    converged_with(n, cfg(vnodes))
}

/// [`converged`] with a given configuration.
fn converged_with(n: u64, c: Config) -> (Net, Vec<PeerId>) {
    converge(new_net(), n, c)
}

/// [`converged_with`] on a given (empty) net.
fn converge(mut net: Net, n: u64, c: Config) -> (Net, Vec<PeerId>) {
    let peers: Vec<PeerId> = (1..=n).map(PeerId::synthetic).collect();
    join_one_by_one(&mut net, &c, &peers, |_| peers[0]);
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();
    (net, peers)
}

/// Adds a fresh core for `p` and has it join through `bootstrap` (request `req`).
fn add_joining(net: &mut Net, c: &Config, p: PeerId, req: u64, bootstrap: PeerId) {
    net.add(p, dht(c, p));
    net.command(
        p,
        Command::Join {
            req,
            bootstrap: vec![bootstrap],
        },
    );
}

/// `p` puts `key` = `value` (request `req`), which must be acknowledged within 100 ms.
fn put_acked(net: &mut Net, p: PeerId, req: u64, key: &[u8], value: &[u8]) {
    net.command(
        p,
        Command::Put {
            req,
            key: key.to_vec(),
            value: value.to_vec(),
            ttl: None,
        },
    );
    net.run_for(Duration::from_millis(100));
    assert!(
        matches!(net.reply(req), Some(Ok(Reply::Stored { .. }))),
        "put {req}: {:?}",
        net.reply(req)
    );
}

/// Adds `peers` to the net one every 500 ms, each joining through `first(i)` (creating
/// the ring when it is that peer itself).
fn join_one_by_one(net: &mut Net, c: &Config, peers: &[PeerId], first: impl Fn(usize) -> PeerId) {
    for (i, &p) in peers.iter().enumerate() {
        net.add(p, dht(c, p));
        let first = first(i);
        let bootstrap = if p == first { vec![] } else { vec![first] };
        net.command(
            p,
            Command::Join {
                req: 100 + i as u64,
                bootstrap,
            },
        );
        net.run_for(Duration::from_millis(500));
    }
}

#[test]
fn ring_creator_that_dropped_every_successor_rejoins_through_fallback_peers() {
    for vnodes in [1, 3] {
        let (mut net, peers) = converged(6, vnodes);
        let creator = peers[0];
        // Membership hands the creator live peers (it was started without bootstrap).
        net.command(
            creator,
            Command::SetFallbackPeers {
                peers: peers[1..].to_vec(),
            },
        );
        // Overload: the creator's requests time out for a while, so it drops every
        // successor (and the others drop it).
        net.isolate(creator, net.now() + Duration::from_secs(10));
        net.run_for(Duration::from_secs(10));
        // Once its messages flow again it is back in the one ring: its rejoins go to the
        // fallback peers rather than only to its own virtual nodes.
        net.run_for(Duration::from_secs(60));
        net.assert_ideal();
    }
}

#[test]
fn a_ring_whose_peers_all_dropped_each_other_forms_again() {
    for vnodes in [1, 3] {
        let (mut net, peers) = converged(3, vnodes);
        for &p in &peers {
            let others: Vec<PeerId> = peers.iter().copied().filter(|q| *q != p).collect();
            net.command(p, Command::SetFallbackPeers { peers: others });
        }
        // A load spike: every request of every peer times out, so each drops every other
        // and rejoins through peers that are out of the ring as well.
        let until = net.now() + Duration::from_secs(5);
        for &p in &peers {
            net.isolate(p, until);
        }
        net.run_for(Duration::from_secs(5));
        assert!(
            net.cores().all(|(p, d)| d.vnode_ids().iter().all(|id| {
                let v = d.vnode(id).unwrap();
                !v.joined || v.succs.iter().all(|s| s.peer == p)
            })),
            "the spike left every peer out of the ring or alone in one"
        );
        // Once messages flow again one ring forms (a lone ring first, the others merge in).
        net.run_for(Duration::from_secs(60));
        net.assert_ideal();
    }
}

#[test]
fn lone_rings_with_fallback_peers_merge() {
    let c = cfg(2);
    let mut net = new_net();
    let peers: Vec<PeerId> = (1..=4).map(PeerId::synthetic).collect();
    for (i, &p) in peers.iter().enumerate() {
        net.add(p, dht(&c, p));
        // Every peer creates a ring of its own: four islands.
        net.command(
            p,
            Command::Join {
                req: 100 + i as u64,
                bootstrap: vec![],
            },
        );
    }
    net.run_for(Duration::from_secs(5));
    let islands = |net: &Net| {
        net.cores()
            .filter(|(p, d)| {
                d.vnode_ids()
                    .iter()
                    .all(|id| d.vnode(id).unwrap().succs.iter().all(|s| s.peer == *p))
            })
            .count()
    };
    assert_eq!(
        islands(&net),
        4,
        "without fallback peers the islands stay apart"
    );
    // Membership names the other peers: each lone ring looks itself up through them.
    for &p in &peers {
        let others: Vec<PeerId> = peers.iter().copied().filter(|q| *q != p).collect();
        net.command(p, Command::SetFallbackPeers { peers: others });
    }
    net.run_for(Duration::from_secs(60));
    assert_eq!(islands(&net), 0);
    net.assert_ideal();
}

/// Two rings of several peers that formed apart (a partition) become one once membership
/// names peers of the other ring as back from the dead: ring unification, not only a lone
/// peer merged into a ring.
#[test]
fn rings_of_several_peers_formed_apart_merge_through_rediscovered_peers() {
    let c = cfg(2);
    let mut net = new_net();
    let peers: Vec<PeerId> = (1..=10).map(PeerId::synthetic).collect();
    let (a, b) = peers.split_at(5);
    // Ring A grows from its first peer, ring B from its own.
    join_one_by_one(&mut net, &c, &peers, |i| if i < 5 { a[0] } else { b[0] });
    net.run_for(Duration::from_secs(60));
    assert!(net.cores().all(|(_, d)| d.is_joined()));
    assert!(
        !net.neighbours_ideal(),
        "two rings formed apart, each closed on itself"
    );
    // Membership reports every peer of the other side back: each peer checks its place
    // through them.
    for (i, &p) in peers.iter().enumerate() {
        let other = if i < 5 { b } else { a };
        net.command(
            p,
            Command::CheckRing {
                peers: other.to_vec(),
            },
        );
    }
    // One check a stabilize round (1 s): across seeds 1–12 the rings had merged after 0.25
    // to 1.25 s; four times the slowest.
    let deadline = net.now() + Duration::from_secs(5);
    while !net.neighbours_ideal() {
        assert!(
            net.now() < deadline,
            "the rings did not merge by the deadline"
        );
        net.run_for(Duration::from_millis(250));
    }
    net.run_for(Duration::from_secs(30));
    net.assert_ideal();
    // The candidates are used up: a ring at rest checks nothing more.
    assert!(net.cores().all(|(_, d)| d.unify_candidates.is_empty()));
}

#[test]
fn restart_with_same_identity_rejoins_while_still_listed() {
    for vnodes in [1, 3, 8] {
        let (mut net, peers) = converged(6, vnodes);
        let r = peers[3];
        let stale = net.cores().map(|(_, d)| d).filter(|d| {
            d.peer() != r
                && d.vnode_ids()
                    .iter()
                    .any(|id| d.vnode(id).unwrap().succs.iter().any(|s| s.peer == r))
        });
        assert!(stale.count() > 0, "others list the peer before it restarts");
        // Crash and restart: a fresh core, nobody told.
        net.crash(r);
        net.add(r, dht(&cfg(vnodes), r));
        net.command(
            r,
            Command::Join {
                req: 7,
                bootstrap: vec![peers[0]],
            },
        );
        net.run_for(Duration::from_secs(30));
        assert_eq!(net.reply(7), Some(&Ok(Reply::Joined)), "V = {vnodes}");
        net.run_for(Duration::from_secs(60));
        net.assert_ideal();
    }
}

/// Adaptive maintenance (`max_backoff`): a ring at rest sends far fewer maintenance
/// messages than with fixed periods, yet a join and a crash are still repaired to the
/// ideal ring (successors, predecessors and every finger).
#[test]
fn adaptive_maintenance_quiets_a_ring_at_rest_and_still_repairs_it() {
    let quiet = |backoff: u32| {
        let c = Config {
            max_backoff: backoff,
            ..cfg(2)
        };
        let (mut net, peers) = converged_with(6, c.clone());
        let before = net.stats().total.sent;
        net.run_for(Duration::from_secs(120));
        (net.stats().total.sent - before, net, peers, c)
    };
    let (fixed, _, _, _) = quiet(1);
    let (adaptive, mut net, peers, c) = quiet(8);
    assert!(
        adaptive * 4 <= fixed,
        "at rest: {adaptive} messages with backoff 8 vs {fixed} with fixed periods"
    );
    // A join into the quiet ring.
    let p = PeerId::synthetic(7);
    add_joining(&mut net, &c, p, 9, peers[2]);
    // The joiner tells its predecessor (`SuccessorHint`), so successors and predecessors
    // are right within a few fast periods, not after a backed-off (up to 12 s) round.
    net.run_for(Duration::from_secs(4));
    assert!(
        net.neighbours_ideal(),
        "neighbours 4 s after a join into a quiet ring"
    );
    net.run_for(Duration::from_secs(120));
    assert_eq!(net.reply(9), Some(&Ok(Reply::Joined)));
    net.assert_ideal();
    // A crash nobody is told about: the others find out by their own timeouts.
    let dead = peers[4];
    net.crash(dead);
    net.run_for(Duration::from_secs(120));
    net.assert_ideal();
}

/// Maintenance messages `from` started (requests and one-way messages, not replies).
fn started_by(net: &Net, from: PeerId) -> usize {
    net.sent()
        .iter()
        .filter(|m| m.from == from && !is_reply(&m.msg))
        .count()
}

/// A failure notice about a peer in the tables brings a quiet peer's maintenance back to
/// its base period: it stabilizes at once instead of up to `max_backoff` periods later,
/// whatever the check of the named peer finds.
#[test]
fn a_failure_notice_brings_quiet_maintenance_back_to_its_base_period() {
    let c = Config {
        max_backoff: 32,
        ..cfg(2)
    };
    let (mut net, peers) = converge(new_net().with_send_log(), 6, c);
    // Long enough at rest for every task to reach its longest wait (1 + 2 + … + 32 s).
    net.run_for(Duration::from_secs(200));
    let x = peers[1];
    let succ = {
        let d = net.node(&x);
        d.vnode(&d.vnode_ids()[0]).unwrap().succs[0].peer
    };
    net.take_sent();
    net.run_for(Duration::from_secs(3));
    let quiet = started_by(&net, x);
    net.take_sent();
    net.peer_down(x, succ);
    net.run_for(Duration::from_secs(3));
    let after = started_by(&net, x);
    // The check of the named peer, then stabilize (one request per virtual node),
    // fix-fingers and check-predecessor, each within a base period or two.
    assert!(
        after >= quiet + 4,
        "{after} requests in the 3 s after the notice, {quiet} in 3 s at rest"
    );
    net.assert_ideal();
}

/// A peer that holds records keeps repair at its period however quiet the ring: replicas
/// count a record orphaned after `ORPHAN_PERIODS` repair periods without an offer from its
/// owner, so backed-off offers would make every replica hand its records back.
#[test]
fn a_quiet_ring_holding_records_hands_nothing_back() {
    let c = Config {
        max_backoff: 32,
        ..cfg(2)
    };
    let (mut net, peers) = converge(new_net().with_send_log(), 6, c);
    for (i, p) in peers.iter().enumerate() {
        net.command(
            *p,
            Command::Put {
                req: 100 + i as u64,
                key: format!("key-{i}").into_bytes(),
                value: b"v".to_vec(),
                ttl: None,
            },
        );
    }
    net.run_for(Duration::from_secs(30));
    net.take_sent();
    net.run_for(Duration::from_secs(120));
    let handoffs = net
        .sent()
        .iter()
        .filter(|m| matches!(m.msg, Message::Handoff { .. }))
        .count();
    assert_eq!(
        handoffs, 0,
        "replicas handed records back on a ring at rest"
    );
}

/// Fix-fingers on a ring at rest confirms each finger with the finger itself, so a peer
/// only ever talks to the peers in its own tables (fingers, successors, predecessor), not
/// to the intermediate hops of fresh lookups — which over time would connect every node to
/// every other.
#[test]
fn a_ring_at_rest_talks_only_to_its_neighbours_and_fingers() {
    let (mut net, peers) = converge(new_net().with_send_log(), 24, cfg(2));
    net.take_sent();
    net.run_for(Duration::from_secs(120));
    // Who sent a request or one-way message to whom (replies go back to whoever asked;
    // only what a peer starts counts).
    let mut talked: BTreeMap<PeerId, BTreeSet<PeerId>> = BTreeMap::new();
    for m in net.sent().iter().filter(|m| !is_reply(&m.msg)) {
        talked.entry(m.from).or_default().insert(m.to);
    }
    for p in &peers {
        let d = net.node(p);
        let mut known = std::collections::BTreeSet::new();
        for id in d.vnode_ids() {
            let v = d.vnode(&id).unwrap();
            known.extend(v.pred.map(|n| n.peer));
            known.extend(v.succs.iter().map(|n| n.peer));
            known.extend(v.fingers.iter().flatten().map(|n| n.peer));
        }
        let talked = talked.get(p).cloned().unwrap_or_default();
        assert!(!talked.is_empty(), "{p:?} sent nothing at rest");
        let strangers: Vec<_> = talked.difference(&known).collect();
        assert!(strangers.is_empty(), "{p:?} talked to {strangers:?}");
    }
}

/// Lookups right after silent crashes, before stabilization has repaired anything: a hop
/// that times out leaves the lookup with fewer candidates, and when none is left the lookup
/// starts again from the asking peer's own tables (the dead peer evicted) instead of
/// failing, so every lookup is answered.
#[test]
fn lookups_through_fresh_crashes_start_again_from_own_tables() {
    let (mut net, peers) = converged(10, 1);
    for dead in [peers[2], peers[5], peers[6]] {
        net.crash(dead);
    }
    let live: Vec<PeerId> = net.peers().collect();
    let mut reqs = Vec::new();
    for (i, p) in live.iter().enumerate() {
        for k in 0..20u64 {
            let req = 50_000 + (i as u64) * 100 + k;
            net.command(
                *p,
                Command::Lookup {
                    req,
                    key: Id::hash(&k.to_be_bytes()),
                },
            );
            reqs.push(req);
        }
    }
    net.run_for(Duration::from_secs(20));
    let failed = reqs
        .iter()
        .filter(|r| !matches!(net.reply(**r), Some(Ok(_))))
        .count();
    assert_eq!(failed, 0, "{failed} of {} lookups failed", reqs.len());
}

/// The three hint rules on one core: a candidate between a vnode and its successor is asked
/// for its state (and not adopted before it answers); a candidate past the successor is
/// passed on along the successor with one forward less; with no forwards left it is dropped.
#[test]
fn successor_hints_are_checked_forwarded_or_dropped() {
    let peers: Vec<PeerId> = (1..=3).map(PeerId::synthetic).collect();
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let me = d.vnode_ids()[0];
    let succ = d.vnode(&me).unwrap().succs[0];
    let stranger = PeerId::synthetic(99);
    // Between the vnode and its successor.
    let close = NodeRef {
        id: me.add_pow2(0),
        peer: stranger,
    };
    let hint = |candidate, forwards| Message::SuccessorHint {
        vnode: me,
        candidate,
        forwards,
    };
    let out = feed(d, peers[1], hint(close, 2));
    let asked = out.iter().any(|o| {
        matches!(o, Output::Send { to, msg: Message::GetState { vnode, .. } }
            if *to == stranger && *vnode == close.id)
    });
    assert!(asked, "the candidate is asked for its state: {out:?}");
    assert_eq!(d.vnode(&me).unwrap().succs[0], succ, "nothing adopted yet");
    // Past the successor: forwarded to it.
    let far = NodeRef {
        id: succ.id.add_pow2(0),
        peer: stranger,
    };
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let out = feed(d, peers[1], hint(far, 2));
    let forwarded: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg:
                    Message::SuccessorHint {
                        vnode,
                        candidate,
                        forwards,
                    },
            } => Some((*to, *vnode, *candidate, *forwards)),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded, vec![(succ.peer, succ.id, far, 1)]);
    let out = feed(d, peers[1], hint(far, 0));
    assert!(out.is_empty(), "no forwards left: dropped, got {out:?}");
}

/// A vnode that takes a closer predecessor tells the one it displaced (whose successor is
/// now the newcomer, not itself).
#[test]
fn a_displaced_predecessor_is_told_of_the_newcomer() {
    let peers: Vec<PeerId> = (1..=3).map(PeerId::synthetic).collect();
    let mut ds = ideal(&peers, &cfg(1));
    let d = &mut ds[0];
    let me = d.vnode_ids()[0];
    let old = d.vnode(&me).unwrap().pred.unwrap();
    // Just after the old predecessor, so between it and `me`.
    let newcomer = NodeRef {
        id: old.id.add_pow2(0),
        peer: PeerId::synthetic(50),
    };
    assert!(newcomer.id.in_open(&old.id, &me));
    let out = feed(
        d,
        newcomer.peer,
        Message::Notify {
            vnode: me,
            from: newcomer,
        },
    );
    assert_eq!(d.vnode(&me).unwrap().pred, Some(newcomer));
    let told = out.iter().any(|o| {
        matches!(o, Output::Send { to, msg: Message::SuccessorHint { vnode, candidate, .. } }
            if *to == old.peer && *vnode == old.id && *candidate == newcomer)
    });
    assert!(
        told,
        "the displaced predecessor hears of the newcomer: {out:?}"
    );
}

/// Forty peers of four vnodes join one ring at the same instant (a testnet's start-up in
/// miniature). Concurrent joins into one gap leave interleaved chains; without hints they
/// zip together one node per stabilize period, with hints (joiner → predecessor, displaced
/// predecessor → newcomer, old successor → candidate) and the walk answered by round trips
/// instead of periods, the ring is ideal within a few periods (without the hints it takes
/// several times as long and the test fails).
#[test]
fn concurrent_joins_converge_within_a_few_periods() {
    let c = Config {
        max_backoff: 1,
        ..cfg(4)
    };
    let mut net = new_net();
    let peers: Vec<PeerId> = (1..=40).map(PeerId::synthetic).collect();
    for (i, &p) in peers.iter().enumerate() {
        net.add(p, dht(&c, p));
        let bootstrap = if i == 0 { vec![] } else { vec![peers[0]] };
        net.command(
            p,
            Command::Join {
                req: i as u64 + 1,
                bootstrap,
            },
        );
    }
    let mut half_secs = 0u32;
    while !net.neighbours_ideal() && half_secs < 600 {
        net.run_for(Duration::from_millis(500));
        half_secs += 1;
    }
    let secs = f64::from(half_secs) / 2.0;
    assert!(
        secs <= 6.0,
        "neighbours ideal after {secs} s (stabilize period 1 s)"
    );
    net.run_for(Duration::from_secs(120));
    net.assert_ideal();
}

/// A join slower than the stabilize period: the stabilize tick restarts the joins of the
/// vnodes still out of the ring while the first one is on its way, so when the first gets
/// in it must not start them again, and a vnode already in the ring takes no join answer
/// (a second join's successor list predates the nodes stabilization found since).
#[test]
fn a_slow_join_places_each_vnode_once() {
    let c = Config {
        request_timeout: Duration::from_secs(3),
        max_backoff: 1,
        ..cfg(4)
    };
    // 400 ms each way: a join lookup and its state request take two round trips, 1.6 s.
    let net = Net::new(SEED).with_latency(Duration::from_millis(400));
    let (mut net, peers) = converge(net, 5, c.clone());
    let joiner = PeerId::synthetic(50);
    add_joining(&mut net, &c, joiner, 1, peers[0]);
    let vnodes = net.node(&joiner).vnode_ids();
    for _ in 0..600 {
        net.run_for(Duration::from_millis(50));
        let d = net.node(&joiner);
        for id in &vnodes {
            let joined = d.vnode(id).is_some_and(|v| v.joined);
            let joins = d.joins_under_way(*id);
            assert!(
                joins <= 1,
                "{joins} joins of one vnode under way at {:?}",
                net.now()
            );
            assert!(
                !joined || joins == 0,
                "a join of a vnode already in the ring is under way at {:?}",
                net.now()
            );
        }
    }
    assert!(net.node(&joiner).is_joined(), "the joiner is in the ring");
    net.run_for(Duration::from_secs(30));
    net.assert_ideal();
}

/// A peer that joins a ring at rest (maintenance backed off to its longest period) becomes
/// a replica of the records whose replica set it enters within a few base periods: a vnode
/// whose replica set changed offers its range to the new replica at once and tells its
/// predecessor, whose replica set changes with it, to stabilize now, so the join travels
/// back through the successor lists one round trip per vnode instead of one backed-off
/// stabilize round.
#[test]
fn a_peer_joining_a_ring_at_rest_gets_its_replicas_within_a_period() {
    let c = Config {
        successors: 8,
        max_backoff: crate::LAN_MAX_BACKOFF,
        ..cfg(4)
    };
    let mut net = Net::new(SEED).with_latency(Duration::from_millis(10));
    let peers: Vec<PeerId> = (1..=2).map(PeerId::synthetic).collect();
    join_one_by_one(&mut net, &c, &peers, |_| peers[0]);
    // At rest: every task backs off to its longest period.
    net.run_for(Duration::from_secs(180));
    assert!(net.neighbours_ideal());
    // A joiner and a record of peer 0 whose owner vnode lies at least four vnodes before
    // the joiner's nearest one: the join must travel back through that many lists.
    let ring_with = |joiner: PeerId| ideal_ring(&[peers[0], peers[1], joiner], &c);
    let gap = |ring: &IdealRing, joiner: PeerId, i: usize| {
        let n = ring.nodes().len();
        (1..n)
            .find(|d| ring.nodes()[(i + d) % n].peer == joiner)
            .unwrap_or(n)
    };
    let (joiner, owner) = (3..500)
        .map(PeerId::synthetic)
        .find_map(|j| {
            let ring = ring_with(j);
            (0..ring.nodes().len())
                .filter(|&i| ring.nodes()[i].peer == peers[0] && gap(&ring, j, i) >= 5)
                .map(|i| ring.nodes()[i])
                .next()
                .map(|o| (j, o))
        })
        .expect("a joiner with a gap");
    let after = ring_with(joiner);
    let key = (0u32..)
        .map(|i| i.to_be_bytes().to_vec())
        .find(|k| {
            let id = Id::hash(k);
            after.successor(&id) == Some(owner) && net.ring().successor(&id) == Some(owner)
        })
        .unwrap();
    put_acked(&mut net, peers[0], 1, &key, b"v");
    add_joining(&mut net, &c, joiner, 2, peers[1]);
    let id = Id::hash(&key);
    let start = net.now();
    let held = net.run_until(Instant(start.0 + 60_000_000), |net| {
        net.node(&joiner).store().get(&id).is_some()
    });
    let secs = (net.now().0 - start.0) as f64 / 1e6;
    assert!(held, "the joiner never became a replica");
    // A round trip per vnode on the way back (0.21 s here), not a stabilize round per
    // vnode (6.2 s without the hints, at the 1 s base period).
    assert!(
        secs <= 1.0,
        "the joiner held the record after {secs} s (base period 1 s)"
    );
}

/// Three peers join right in front of a key and become its owner and replicas, and none of
/// them holds the key yet (scripted here by dropping their copies: hand-offs still in
/// flight). A get finds "none" at all three and must ask the peers after them, where the
/// copies still are, rather than report the key missing; and it repairs the three.
#[test]
fn a_get_reads_past_a_replica_set_that_has_not_received_the_key() {
    let c = cfg(1);
    let (mut net, peers) = converged_with(5, c.clone());
    let key = b"moving".to_vec();
    let id = Id::hash(&key);
    put_acked(&mut net, peers[0], 1, &key, b"v");
    // Three peers whose (only) vnode falls between the key and its owner: the first becomes
    // the owner, the others its replicas.
    let owner = net.ring().successor(&id).unwrap();
    let joiners: Vec<PeerId> = (100..5000)
        .map(PeerId::synthetic)
        .filter(|p| Id::vnode(p, 0).in_open(&id, &owner.id))
        .take(3)
        .collect();
    assert_eq!(joiners.len(), 3);
    for (i, &j) in joiners.iter().enumerate() {
        add_joining(&mut net, &c, j, 10 + i as u64, peers[0]);
    }
    let deadline = Instant(net.now().0 + 30_000_000);
    assert!(net.run_until(deadline, |net| net.neighbours_ideal()));
    for j in &joiners {
        net.node_mut(j).store_mut().remove(&id);
    }
    let further = net
        .cores()
        .filter(|(p, d)| !joiners.contains(p) && d.store().get(&id).is_some())
        .count();
    assert!(further > 0, "the old holders still have it");
    net.command(peers[1], Command::Get { req: 2, key });
    net.run_for(Duration::from_secs(1));
    assert!(
        matches!(net.reply(2), Some(Ok(Reply::Value { value: Some(v), .. })) if v == b"v"),
        "{:?}",
        net.reply(2)
    );
    assert!(
        joiners
            .iter()
            .all(|j| net.node(j).store().get(&id).is_some()),
        "the read repaired the owner and its replicas"
    );
}

/// A key's owner that crashes and restarts at once loses its provider sets (they live in
/// memory) while no ring pointer changes, so no join hands them back: its replicas give
/// them back when the owner's next repair offer lacks them, and look-ups find the provider
/// again within a few repair periods instead of at the provider's next announcement.
#[test]
fn a_restarted_owner_gets_its_provider_sets_back_from_its_replicas() {
    let c = cfg(2);
    let (mut net, peers) = converged_with(6, c.clone());
    let provider = peers[4];
    let cid = (0u32..)
        .map(|i| Id::hash(&i.to_be_bytes()))
        .find(|k| {
            let owner = net.ring().successor(k).unwrap().peer;
            owner != provider && owner != peers[0]
        })
        .unwrap();
    let owner = net.ring().successor(&cid).unwrap().peer;
    net.command(
        provider,
        Command::AddProvider {
            req: 1,
            key: cid,
            ttl: Duration::from_secs(3600),
        },
    );
    net.run_for(Duration::from_secs(2));
    // Crash and restart: a fresh core with the same identity, nobody told.
    net.crash(owner);
    add_joining(&mut net, &c, owner, 2, peers[0]);
    let found = |net: &mut Net, req: u64| {
        net.command(peers[0], Command::GetProviders { req, key: cid });
        net.run_for(Duration::from_millis(500));
        matches!(net.reply(req), Some(Ok(Reply::Providers { providers, .. }))
            if providers.iter().any(|p| p.provider == provider))
    };
    // Three repair periods (1 s here) after the restart.
    net.run_for(Duration::from_secs(3));
    assert!(
        found(&mut net, 3),
        "the provider is not found after the owner's restart: {:?}",
        net.reply(3)
    );
}

/// A run of adjacent virtual nodes that are all rejoining at once (as when several peers
/// restart while a busy machine slows their joins) answer `NotJoined` for 20 s; their
/// predecessor, whose whole successor list is that run, must not leave the ring for it
/// (the gap would grow backwards, one predecessor after another), and once the joins can
/// proceed — asked again every 2 s, as the node does — the ring takes the run back in
/// (16.4 s here).
#[test]
fn a_predecessor_of_a_run_of_rejoining_nodes_stays_in_the_ring() {
    let c = cfg(1);
    let (mut net, _) = converged_with(16, c.clone());
    let order: Vec<PeerId> = net.ring().nodes().iter().map(|n| n.peer).collect();
    let pred = order[0];
    let run: Vec<PeerId> = order[1..=c.successors].to_vec();
    let through = order[order.len() / 2];
    for (i, &p) in run.iter().enumerate() {
        net.crash(p);
        net.add(p, dht(&c, p));
        net.command(
            p,
            Command::Join {
                req: 100 + i as u64,
                bootstrap: vec![through],
            },
        );
    }
    // For a while the restarted peers answer only refusals (their joins make no progress).
    let slow = run.clone();
    net.set_filter(move |s| !slow.contains(&s.from) || matches!(s.msg, Message::Rejected { .. }));
    let start = net.now();
    while net.now() < start + Duration::from_secs(20) {
        net.run_for(Duration::from_millis(100));
        let d = net.node(&pred);
        let v = d.vnode(&d.vnode_ids()[0]).unwrap();
        assert!(
            v.joined,
            "the predecessor left the ring at {:?} after the run restarted",
            net.now() - start
        );
    }
    net.clear_filter();
    // Joins that gave up are asked again every 2 s, as the node does while out of a ring.
    let healed = net.now();
    let mut round = 0;
    let whole = |net: &Net| run.iter().all(|p| net.node(p).is_joined()) && net.neighbours_ideal();
    while !whole(&net) {
        assert!(
            net.now() < healed + Duration::from_secs(30),
            "the ring did not take the run back in: joined {:?}",
            run.iter()
                .map(|p| net.node(p).is_joined())
                .collect::<Vec<_>>()
        );
        for (i, &p) in run.iter().enumerate() {
            if !net.node(&p).is_joined() && round % 20 == 0 {
                net.command(
                    p,
                    Command::Join {
                        req: 1000 + round * 10 + i as u64,
                        bootstrap: vec![through],
                    },
                );
            }
        }
        round += 1;
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(60));
    net.assert_ideal();
}

/// A predecessor whose peer restarted and has not rejoined answers `NotJoined` to the
/// periodic check; it is dropped at once. Kept for as long as its peer answers, it made
/// its successor refuse every closer node's notify, so a node that joined between them
/// stayed out of the ring.
#[test]
fn a_predecessor_out_of_the_ring_is_dropped_at_its_check() {
    let c = cfg(1);
    let (mut net, _) = converged_with(8, c.clone());
    let order: Vec<NodeRef> = net.ring().nodes().to_vec();
    let (x, s) = (order[2], order[3]);
    // X restarts and does not join: its peer answers, its virtual node is out of the ring.
    net.crash(x.peer);
    net.add(x.peer, dht(&c, x.peer));
    let pred_of_s = |net: &Net| {
        let d = net.node(&s.peer);
        d.vnode(&s.id).unwrap().pred
    };
    assert_eq!(pred_of_s(&net), Some(x));
    // A few check periods (1 s here).
    let deadline = net.now() + Duration::from_secs(5);
    assert!(
        net.run_until(deadline, |n| pred_of_s(n) != Some(x)),
        "the successor still names the restarted node as its predecessor"
    );
}

/// A state answer carries the successor list only to askers that use it: finger,
/// predecessor and liveness checks ask for the predecessor alone (`pred_only`), stabilize
/// asks for both. A successor list is most of a state answer, and these checks are most
/// of what a ring at rest sends.
#[test]
fn only_stabilize_asks_for_a_successor_list() {
    let peers: Vec<PeerId> = (1..=4).map(PeerId::synthetic).collect();
    let mut ds = ideal(&peers, &cfg(2));
    let v = ds[0].vnode_ids()[0];
    let answer = |out: &[Output<Message, Timer, Event>]| {
        out.iter().find_map(|o| match o {
            Output::Send {
                msg: Message::State { succs, .. },
                ..
            } => Some(succs.len()),
            _ => None,
        })
    };
    let ask = |pred_only| Message::GetState {
        req: 1,
        vnode: v,
        pred_only,
    };
    let full = answer(&feed(&mut ds[0], peers[1], ask(false)));
    assert!(full.is_some_and(|n| n > 1), "{full:?}");
    assert_eq!(answer(&feed(&mut ds[0], peers[1], ask(true))), Some(0));

    // What each maintenance task asks.
    let asks = |d: &mut Dht, t: Timer| {
        let (mut rng, mut out): (Rng, Out) = (Rng::seed(1), Outbox::new());
        d.handle_timer(&mut Context::new(Instant(1_000_000), &mut rng, &mut out), t);
        out.drain()
            .filter_map(|o| match o {
                Output::Send {
                    msg: Message::GetState { pred_only, .. },
                    ..
                } => Some(pred_only),
                _ => None,
            })
            .collect::<Vec<bool>>()
    };
    let d = &mut ds[1];
    let stabilize = asks(d, Timer::Stabilize(0));
    assert!(
        !stabilize.is_empty() && stabilize.iter().all(|p| !p),
        "{stabilize:?}"
    );
    let checks = asks(d, Timer::CheckPredecessor(0));
    assert!(
        !checks.is_empty() && checks.iter().all(|p| *p),
        "{checks:?}"
    );
    let fingers = asks(d, Timer::FixFingers(0));
    assert!(fingers.iter().all(|p| *p), "{fingers:?}");
}

/// A put whose owner crashed, before the owner's predecessor noticed: the first attempt
/// times out at the dead owner, and the retry must not be sent to it again (the
/// predecessor still names it) but to the live successor that takes its range over.
#[test]
fn a_put_whose_owner_died_unnoticed_is_stored_at_the_next_live_successor() {
    // Maintenance far slower than the test: nobody notices the crash by stabilizing.
    let c = Config {
        stabilize_period: Duration::from_secs(600),
        fix_fingers_period: Duration::from_secs(600),
        check_predecessor_period: Duration::from_secs(600),
        repair_period: Duration::from_secs(600),
        ..cfg(1)
    };
    let peers: Vec<PeerId> = (1..=8).map(PeerId::synthetic).collect();
    let mut net = new_net();
    for (p, d) in peers.iter().zip(ideal(&peers, &c)) {
        net.add(*p, d);
    }
    let ring = ideal_ring(&peers, &c);
    let key = b"k".to_vec();
    let i = ring.successor_index(&Id::hash(&key));
    let n = ring.len();
    let owner = ring.nodes()[i].peer;
    let owner_succ = ring.nodes()[(i + 1) % n].peer;
    let pred = ring.nodes()[(i + n - 1) % n].peer;
    net.crash(owner);
    let from = *peers
        .iter()
        .find(|p| ![owner, owner_succ, pred].contains(p))
        .unwrap();
    net.command(
        from,
        Command::Put {
            req: 7,
            key,
            value: b"v".to_vec(),
            ttl: None,
        },
    );
    // Three attempts of a 300 ms timeout each at most; the second one must succeed.
    net.run_for(Duration::from_millis(800));
    match net.reply(7) {
        Some(Ok(Reply::Stored { route, .. })) => {
            assert_eq!(
                route.owner, owner_succ,
                "stored at the dead owner's successor"
            )
        }
        other => panic!("the put was not stored after one timeout: {other:?}"),
    }
    assert_eq!(
        net.node(&from).counters().timeouts,
        1,
        "one timeout, at the dead owner"
    );
}
