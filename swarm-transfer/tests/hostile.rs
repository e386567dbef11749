//! Hostile peers against a swarm core: blocks nobody asked for, corrupt blocks slipped into
//! chunks fetched from several peers, stallers, floods of fresh identities, malformed input.
//! Each rule is also run with `Config::defenses` off where that shows what the rule buys.

mod common;

use bytes::Bytes;
use common::*;
use peerlab_overlay::{Offence, PeerId};
use peerlab_swarm::{BLOCK_SIZE, Bitfield, Command, Config, ContentId, Event, Manifest};

/// A seeder that shows its whole bitfield at once (no super-seeding), so that which chunks
/// a fetcher can ask it for does not depend on reveals.
fn seeding() -> Config {
    Config {
        super_seed: false,
        ..Config::default()
    }
}

fn no_defenses(config: Config) -> Config {
    Config {
        defenses: false,
        ..config
    }
}

fn fetch(net: &mut Net, f: PeerId, cid: ContentId, providers: Vec<PeerId>) {
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers,
        },
    );
}

/// Block `block` of chunk `chunk` of `data` cut as `m` says.
fn block_of(m: &Manifest, data: &Bytes, chunk: u32, block: u32) -> Bytes {
    let start = m.chunk_offset(chunk) as usize + (block * m.block_size()) as usize;
    let len = m.block_len(chunk, block).unwrap() as usize;
    data.slice(start..start + len)
}

fn garbage(len: usize) -> Bytes {
    Bytes::from(vec![0x5a; len])
}

/// The senders of every chunk `f` rejected.
fn rejections(net: &Net, f: PeerId) -> Vec<Vec<PeerId>> {
    net.events()
        .iter()
        .filter_map(|(_, p, e)| match e {
            Event::ChunkRejected { from, .. } if *p == f => Some(from.clone()),
            _ => None,
        })
        .collect()
}

/// A fetcher of 2-block chunks asking one block at a time from an honest seeder and from a
/// peer whose every block is corrupt: the two alternate, so chunks fail with a block from
/// each.
fn liar_among_honest(
    mut net: Net,
    fetcher: Config,
) -> (Net, PeerId, PeerId, PeerId, ContentId, Bytes) {
    let s = net.add_with(1, seeding());
    let liar = net.add_with(2, seeding());
    let f = net.add_with(
        3,
        Config {
            pipeline_depth: 1,
            min_pipeline_depth: 1,
            ..fetcher
        },
    );
    let data = file(8 * 2 * BLOCK_SIZE as usize);
    let (_, cid) = share(&mut net, s, &data, 2 * BLOCK_SIZE, false);
    share_poisoned(&mut net, liar, &data, 2 * BLOCK_SIZE, Poison::Every);
    fetch(&mut net, f, cid, vec![s, liar]);
    (net, s, liar, f, cid, data)
}

#[test]
fn a_poisoned_block_among_honest_ones_convicts_its_sender_alone() {
    let (mut net, s, liar, f, cid, data) = liar_among_honest(new_net(), Config::default());
    // Step until the ban, noting how much had been sent before the step that banned.
    let banned = |net: &Net| {
        net.events().iter().any(|(_, p, e)| {
            *p == f && matches!(e, Event::PeerBanned { peer, .. } if *peer == liar)
        })
    };
    let mut mark = 0;
    while !banned(&net) {
        mark = net.sent().len();
        assert!(net.step() && net.now() <= secs(600), "never banned");
    }
    net.run(secs(600));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    let rejected = rejections(&net, f);
    assert!(
        rejected.iter().any(|from| from.len() == 2),
        "a chunk failed with blocks from both peers: {rejected:?}"
    );
    // The liar is proven corrupt and banned; the honest contributor is never struck.
    assert_eq!(net.offences_by(f, liar), vec![Offence::Corrupt]);
    assert!(net.offences_by(f, s).is_empty());
    assert_eq!(net.core(f).banned(&cid), vec![liar]);
    // Banned, it is never asked again.
    let asked_after = net.sent()[mark..]
        .iter()
        .filter(|m| m.from == f && m.to == liar && m.msg.body.kind() == "swarm_request")
        .count();
    assert_eq!(asked_after, 0);
}

#[test]
fn without_parole_a_liar_that_always_contributes_stalls_the_chunk() {
    // The same swarm without the defenses: every retry mixes the two peers again, the chunk
    // fails each time, and nobody is ever struck (the liar's blocks are never the only
    // ones, and the chunk never passes to compare against).
    let (mut net, _s, liar, f, cid, _) =
        liar_among_honest(endless_net(), no_defenses(Config::default()));
    let settled = net.run_bounded(secs(600), 200_000);
    assert!(!settled, "retries go on for ever");
    assert!(!net.completed(f));
    assert!(net.core(f).stats(&cid).unwrap().corrupt_chunks > 100);
    assert!(net.core(f).banned(&cid).is_empty() && net.offences_by(f, liar).is_empty());
}

/// A fetcher `f` of an honest seeder `s`, and a peer `a` (no core) connected to `f` that
/// injects a corrupt copy of block 0 of every chunk just before `s` answers `f`'s request
/// for it.
fn injected_poison(mut net: Net, fetcher: Config) -> (Net, PeerId, PeerId, ContentId, Bytes, bool) {
    let s = net.add_with(1, seeding());
    let f = net.add_with(2, fetcher);
    let a = PeerId::synthetic(66);
    let data = file(8 * 4 * BLOCK_SIZE as usize);
    let (_, cid) = share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    fetch(&mut net, f, cid, vec![s]);
    // `a` opens the transfer with `f` before `f` has the manifest: `f` connects back.
    net.inject(a, f, Body::Handshake, cid);
    net.set_tap(move |m| match m.msg.body {
        Body::Request { chunk, block: 0 } if (m.from, m.to) == (f, s) => {
            let body = Body::Block {
                chunk,
                block: 0,
                data: garbage(BLOCK_SIZE as usize),
            };
            vec![(a, f, peerlab_swarm::Message { cid, body })]
        }
        _ => Vec::new(),
    });
    let settled = net.run_bounded(secs(600), 200_000);
    (net, f, a, cid, data, settled)
}

#[test]
fn unsolicited_blocks_cannot_poison_a_chunk() {
    let (net, f, a, cid, data, settled) = injected_poison(new_net(), Config::default());
    assert!(settled);
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    let stats = net.core(f).stats(&cid).unwrap();
    assert_eq!(stats.corrupt_chunks, 0);
    assert_eq!(stats.unsolicited, 8, "one dropped block per chunk");
    assert_eq!(net.offences_by(f, a), vec![Offence::Unsolicited; 8]);
}

#[test]
fn without_defenses_one_injected_block_per_retry_stalls_a_chunk_for_ever() {
    let (net, f, _a, cid, _, settled) =
        injected_poison(endless_net(), no_defenses(Config::default()));
    assert!(!settled, "retries go on for ever");
    assert!(!net.completed(f));
    assert!(net.core(f).stats(&cid).unwrap().corrupt_chunks > 100);
}

#[test]
fn late_blocks_are_dropped_without_blame_and_strangers_blocks_are_counted() {
    // One chunk of two blocks, two seeders `s1`, `s2` and a connected peer `a` with
    // nothing, all three scripted (no cores).
    let mut net = new_net();
    let f = net.add_node(1);
    let (s1, s2, a) = (
        PeerId::synthetic(11),
        PeerId::synthetic(12),
        PeerId::synthetic(13),
    );
    let data = file(2 * BLOCK_SIZE as usize);
    let m = Manifest::from_bytes("f.bin", &data, 2 * BLOCK_SIZE).unwrap();
    let cid = m.content_id();
    fetch(&mut net, f, cid, vec![s1, s2]);
    net.inject(a, f, Body::Handshake, cid);
    net.inject(s1, f, Body::Manifest(m.clone()), cid);
    net.inject(a, f, Body::Bitfield(Bitfield::new(1)), cid);
    for s in [s1, s2] {
        net.inject(s, f, Body::Bitfield(Bitfield::full(1)), cid);
        net.inject(s, f, Body::Unchoke, cid);
    }
    // Both blocks are asked of `s1`, and (endgame) again of `s2`.
    assert_eq!(net.sent_count(f, s1, "swarm_request"), 2);
    assert_eq!(net.sent_count(f, s2, "swarm_request"), 2);
    let block = |net: &mut Net, from, b: u32, data: Bytes| {
        net.inject(
            from,
            f,
            Body::Block {
                chunk: 0,
                block: b,
                data,
            },
            cid,
        )
    };
    // `a` was asked for nothing: its block is dropped, counted and reported.
    block(&mut net, a, 0, garbage(BLOCK_SIZE as usize));
    assert_eq!(net.offences_by(f, a), vec![Offence::Unsolicited]);
    assert_eq!(net.core(f).stats(&cid).unwrap().unsolicited, 1);
    // `s1` answers block 0: taken, and the copy asked of `s2` is cancelled.
    block(&mut net, s1, 0, block_of(&m, &data, 0, 0));
    assert_eq!(net.sent_count(f, s2, "swarm_cancel"), 1);
    // `s2`'s copy crossed the cancel: late, dropped, not held against it.
    let wasted = net.core(f).stats(&cid).unwrap().wasted;
    block(&mut net, s2, 0, block_of(&m, &data, 0, 0));
    assert_eq!(
        net.core(f).stats(&cid).unwrap().wasted,
        wasted + BLOCK_SIZE as u64
    );
    // `s2` delivers block 1 first; `s1`'s copy is late too.
    block(&mut net, s2, 1, block_of(&m, &data, 0, 1));
    assert!(net.completed(f));
    block(&mut net, s1, 1, block_of(&m, &data, 0, 1));
    assert!(net.offences_by(f, s1).is_empty() && net.offences_by(f, s2).is_empty());
    assert_eq!(net.core(f).stats(&cid).unwrap().unsolicited, 1);
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    // A peer not connected to the transfer is ignored, but its block is counted.
    block(
        &mut net,
        PeerId::synthetic(14),
        0,
        garbage(BLOCK_SIZE as usize),
    );
    assert_eq!(net.core(f).stats(&cid).unwrap().unsolicited, 2);
    assert_eq!(net.offences().len(), 1);
}

/// A fetcher `f` whose only provider `x` (scripted) claims the whole file, unchokes it and
/// then answers nothing.
fn staller(fetcher: Config) -> (Net, PeerId, PeerId, ContentId, Bytes) {
    let mut net = new_net();
    let depth = fetcher.min_pipeline_depth;
    let f = net.add_with(1, fetcher);
    let x = PeerId::synthetic(21);
    let data = file(8 * 4 * BLOCK_SIZE as usize);
    let m = Manifest::from_bytes("f.bin", &data, 4 * BLOCK_SIZE).unwrap();
    let cid = m.content_id();
    fetch(&mut net, f, cid, vec![x]);
    net.inject(x, f, Body::Manifest(m.clone()), cid);
    net.inject(x, f, Body::Bitfield(Bitfield::full(m.chunk_count())), cid);
    net.inject(x, f, Body::Unchoke, cid);
    // Nothing measured yet: the queue starts at its floor.
    assert_eq!(net.sent_count(f, x, "swarm_request"), depth);
    (net, f, x, cid, data)
}

fn connected(net: &Net, f: PeerId, cid: &ContentId, p: PeerId) -> bool {
    net.core(f).links(cid).iter().any(|l| l.peer == p)
}

#[test]
fn a_staller_is_evicted_and_its_requests_go_elsewhere() {
    let (mut net, f, x, cid, data) = staller(Config::default());
    net.run(secs(55));
    assert!(
        connected(&net, f, &cid, x),
        "not yet past the request timeout"
    );
    assert!(net.offences_by(f, x).is_empty());
    net.run(secs(61));
    assert!(!connected(&net, f, &cid, x));
    assert_eq!(net.offences_by(f, x), vec![Offence::Stalled]);
    assert_eq!(
        net.sent_count(f, x, "swarm_close"),
        1,
        "told it was dropped"
    );
    assert_eq!(net.core(f).stats(&cid).unwrap().evicted, 1);
    // Its blocks were asked of nobody else: an honest seeder found later gets them all.
    let s = net.add_with(2, seeding());
    share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    net.run(secs(120));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    assert!(net.offences_by(f, s).is_empty());
}

#[test]
fn without_defenses_a_staller_keeps_its_slot() {
    let (mut net, f, x, cid, _) = staller(no_defenses(Config::default()));
    net.run(secs(200));
    assert!(connected(&net, f, &cid, x));
    assert!(net.offences().is_empty());
    // Its requests time out and go to it again.
    assert!(net.sent_count(f, x, "swarm_request") > Config::default().min_pipeline_depth);
}

/// A fetcher `f` that has the manifest from `m` (scripted, connected, with nothing) and
/// then receives a handshake and an empty bitfield from `n` fresh identities.
fn flooded(fetcher: Config, n: u64) -> (Net, PeerId, ContentId, Bytes) {
    let mut net = new_net();
    let f = net.add_with(1, fetcher);
    let m_peer = PeerId::synthetic(31);
    let data = file(8 * 4 * BLOCK_SIZE as usize);
    let m = Manifest::from_bytes("f.bin", &data, 4 * BLOCK_SIZE).unwrap();
    let cid = m.content_id();
    fetch(&mut net, f, cid, vec![m_peer]);
    net.inject(m_peer, f, Body::Manifest(m.clone()), cid);
    net.inject(
        m_peer,
        f,
        Body::Bitfield(Bitfield::new(m.chunk_count())),
        cid,
    );
    net.run(secs(1));
    sybils(&mut net, f, cid, 100_000, n, m.chunk_count());
    (net, f, cid, data)
}

fn sybils(net: &mut Net, f: PeerId, cid: ContentId, first: u64, n: u64, chunks: u32) {
    for i in first..first + n {
        let sybil = PeerId::synthetic(i);
        net.inject(sybil, f, Body::Handshake, cid);
        net.inject(sybil, f, Body::Bitfield(Bitfield::new(chunks)), cid);
    }
}

#[test]
fn a_flood_of_fresh_identities_leaves_room_for_a_seeder_found_later() {
    let (mut net, f, cid, data) = flooded(Config::default(), 200);
    // Newcomers that opened the transfer hold half the 80 slots; the rest were refused.
    assert_eq!(net.core(f).links(&cid).len(), 1 + 40);
    let refused = (100_000..100_200)
        .filter(|&i| net.sent_count(f, PeerId::synthetic(i), "swarm_close") == 1)
        .count();
    assert_eq!(refused, 160);
    // A seeder found through discovery still gets a slot, and delivers.
    let s = net.add_with(2, seeding());
    share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    net.run(secs(5));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
}

#[test]
fn a_flood_of_fresh_identities_never_evicts_a_peer_that_delivered() {
    let (mut net, f, cid, data) = flooded(Config::default(), 0);
    // A seeder opens the transfer with `f` (inbound, like the flood) and delivers.
    let s = net.add_with(2, seeding());
    share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    net.command(
        s,
        Command::AddPeers {
            cid,
            peers: vec![f],
        },
    );
    net.run(secs(1));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    sybils(&mut net, f, cid, 100_000, 200, 8);
    assert_eq!(net.core(f).links(&cid).len(), 2 + 40);
    // A second wave past the first one's probation replaces those newcomers, never the
    // seeder that delivered (connected longest, it would be the first to go otherwise).
    net.run(secs(40));
    sybils(&mut net, f, cid, 200_000, 200, 8);
    assert!(connected(&net, f, &cid, s));
    assert_eq!(net.core(f).stats(&cid).unwrap().evicted, 40);
    assert!(
        (100_000..100_200).all(|i| !connected(&net, f, &cid, PeerId::synthetic(i))),
        "the first wave is gone"
    );
    assert!(net.offences_by(f, s).is_empty());
}

#[test]
fn without_defenses_a_flood_of_fresh_identities_starves_the_fetch() {
    let (mut net, f, cid, data) = flooded(no_defenses(Config::default()), 200);
    assert_eq!(net.core(f).links(&cid).len(), 80);
    let s = net.add_with(2, seeding());
    share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    net.run(secs(300));
    assert!(!net.completed(f));
    assert!(!connected(&net, f, &cid, s));
}

#[test]
fn a_close_drops_the_connection_and_frees_its_requests() {
    let (mut net, f, x, cid, data) = staller(Config::default());
    net.inject(x, f, Body::Close, cid);
    assert!(!connected(&net, f, &cid, x));
    assert!(net.offences().is_empty(), "closing is no offence");
    let s = net.add_with(2, seeding());
    share(&mut net, s, &data, 4 * BLOCK_SIZE, false);
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    let to_x = net.sent().iter().filter(|m| m.to == x).count();
    net.run(secs(1));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    assert_eq!(
        net.sent().iter().filter(|m| m.to == x).count(),
        to_x,
        "nothing more sent to it"
    );
}

#[test]
fn every_rejected_input_is_reported_as_an_offence() {
    for defenses in [true, false] {
        let mut net = new_net();
        let config = Config {
            defenses,
            ..Config::default()
        };
        let s = net.add_with(
            1,
            Config {
                defenses,
                ..seeding()
            },
        );
        let f = net.add_with(2, config);
        let data = file(4 * BLOCK_SIZE as usize);
        let (m, cid) = share(&mut net, s, &data, BLOCK_SIZE, false);
        // A manifest that does not hash to the content id it answers: corrupt data.
        let liar = PeerId::synthetic(9);
        fetch(&mut net, f, cid, vec![liar]);
        // The liar is not a node: the request to it is lost, its answer injected below.
        let forged = Manifest::from_bytes("f.bin", &file(999), BLOCK_SIZE).unwrap();
        net.inject(liar, f, Body::Manifest(forged), cid);
        // Peers connected to the seeder break the protocol in each way they can: `x` sends
        // a bitfield of the wrong length, a `Have` and a request outside the file (three
        // violations ban it), `z` cancels a block outside the file.
        let (x, z, y) = (
            PeerId::synthetic(8),
            PeerId::synthetic(7),
            PeerId::synthetic(6),
        );
        net.inject(x, s, Body::Handshake, cid);
        for body in [
            Body::Bitfield(Bitfield::new(m.chunk_count() + 8)),
            Body::Have { chunk: 99 },
            Body::Request { chunk: 0, block: 5 },
        ] {
            net.inject(x, s, body, cid);
        }
        net.inject(z, s, Body::Handshake, cid);
        net.inject(z, s, Body::Cancel { chunk: 7, block: 0 }, cid);
        // `y` opens the transfer again and again: each costs the seeder a bitfield.
        for _ in 0..7 {
            net.inject(y, s, Body::Handshake, cid);
        }
        if defenses {
            assert_eq!(net.offences_by(f, liar), vec![Offence::Corrupt]);
            assert_eq!(net.offences_by(s, x), vec![Offence::Malformed; 3]);
            assert_eq!(net.offences_by(s, z), vec![Offence::Malformed]);
            assert_eq!(net.offences_by(s, y), vec![Offence::Excess; 2]);
            assert_eq!(net.sent_count(s, y, "swarm_bitfield"), 5);
        } else {
            assert!(net.offences().is_empty());
            assert_eq!(net.sent_count(s, y, "swarm_bitfield"), 7);
        }
        // Either way the violations are penalised in the transfer (three ban the peer).
        assert_eq!(net.penalties(s).len(), 4);
        assert_eq!(net.penalties(f).len(), 1);
        assert_eq!(net.core(s).banned(&cid), vec![x]);
    }
}
