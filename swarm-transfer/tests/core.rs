//! Drives swarm cores directly (no simulator) through the in-memory network of
//! `common`: honest transfers, manifests, protocol violations, endgame, discovery,
//! super-seeding and the paced uplink.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use peerlab_overlay::{PeerId, Protocol};
use peerlab_swarm::{
    ChunkStore, Command, Config, ContentId, Event, Manifest, ManifestError, MemoryStore, Message,
    ProtocolError,
};

#[test]
fn small_files_transfer_byte_identical() {
    for (size, chunk) in [
        (0usize, 1024u32),
        (1, 1024),
        (100_000, 16 * 1024),
        (300_001, 64 * 1024),
    ] {
        let mut net = new_net();
        let s = net.add_node(1);
        let f = net.add_node(2);
        let data = file(size);
        let (_, cid) = share(&mut net, s, &data, chunk, false);
        net.command(
            f,
            Command::Fetch {
                req: 1,
                cid,
                providers: vec![s],
            },
        );
        net.run(secs(60));
        assert_eq!(
            contents(&net, f, &cid).as_deref(),
            Some(&data[..]),
            "size {size}"
        );
        assert!(
            net.events()
                .iter()
                .any(|(_, p, e)| *p == f && matches!(e, Event::Completed { .. }))
        );
        assert!(net.penalties(f).is_empty() && net.penalties(s).is_empty());
    }
}

#[test]
fn forged_manifest_is_refused_and_the_next_provider_asked() {
    let mut net = new_net();
    let s = net.add_node(1);
    let f = net.add_node(2);
    let liar = PeerId::synthetic(66);
    let data = file(50_000);
    let (m, cid) = share(&mut net, s, &data, 16 * 1024, false);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![liar],
        },
    );
    // The liar is not a node: the request to it is lost, its answer injected below.
    let forged = Manifest::from_bytes("f.bin", &file(50_001), 16 * 1024).unwrap();
    net.inject(liar, f, Body::Manifest(forged), cid);
    assert!(matches!(
        net.penalties(f)[..],
        [ProtocolError::Manifest(ManifestError::CidMismatch { .. })]
    ));
    assert!(net.core(f).manifest(&cid).is_none(), "nothing opened");
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    net.run(secs(120));
    assert_eq!(net.core(f).manifest(&cid), Some(&m));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
}

/// A fetcher `f` connected to seeder `s` (handshakes done, nothing downloaded yet).
fn connected_pair(data: &Bytes) -> (Net, PeerId, PeerId, ContentId) {
    let mut net = new_net();
    let s = net.add_node(1);
    let f = net.add_node(2);
    let (_, cid) = share(&mut net, s, data, 16 * 1024, false);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![s],
        },
    );
    // Deliver the manifest exchange and handshakes but stop before blocks flow.
    for _ in 0..6 {
        if net.in_flight() > 0 {
            net.step();
        }
    }
    assert!(net.core(f).manifest(&cid).is_some());
    net.take_in_flight();
    (net, s, f, cid)
}

#[test]
fn bad_blocks_are_typed_errors_and_nothing_is_written() {
    let data = file(40_000);
    let (mut net, s, f, cid) = connected_pair(&data);
    let cases = [
        (
            Body::Block {
                chunk: 9,
                block: 0,
                data: Bytes::from_static(&[0; 16]),
            },
            "outside",
        ),
        (
            Body::Block {
                chunk: 0,
                block: 1,
                data: Bytes::from(vec![0; 16 * 1024]),
            },
            "outside",
        ),
        (
            Body::Block {
                chunk: 0,
                block: 0,
                data: Bytes::from(vec![0; 1 << 20]),
            },
            "oversized",
        ),
    ];
    // Handed to the core directly, past the codec: the oversized block is larger than a
    // frame may be, and the core must refuse it on its own all the same.
    for (body, _) in cases {
        net.with(f, |c, cx| c.handle_message(cx, s, Message { cid, body }));
    }
    let errs = net.penalties(f);
    assert!(matches!(
        errs[0],
        ProtocolError::OutOfRange { chunk: 9, block: 0 }
    ));
    assert!(matches!(
        errs[1],
        ProtocolError::OutOfRange { chunk: 0, block: 1 }
    ));
    assert!(matches!(
        errs[2],
        ProtocolError::Oversized {
            kind: "swarm_block",
            ..
        }
    ));
    let st = net.core(f).stats(&cid).unwrap();
    assert_eq!(
        (st.have, st.downloaded),
        (0, 0),
        "nothing counted or written"
    );
    assert_eq!(net.core(f).store(&cid).unwrap().held().count(), 0);
    // Three violations: banned, and later messages from it are ignored.
    assert!(
        net.events()
            .iter()
            .any(|(_, p, e)| *p == f && *e == Event::PeerBanned { cid, peer: s })
    );
    assert_eq!(net.core(f).banned(&cid), vec![s]);
    net.inject(
        s,
        f,
        Body::Block {
            chunk: 9,
            block: 0,
            data: Bytes::new(),
        },
        cid,
    );
    assert_eq!(net.penalties(f).len(), 3);
}

#[test]
fn short_block_is_refused() {
    let data = file(40_000);
    let (mut net, s, f, cid) = connected_pair(&data);
    net.inject(
        s,
        f,
        Body::Block {
            chunk: 2,
            block: 0,
            data: Bytes::from_static(&[1; 10]),
        },
        cid,
    );
    assert!(matches!(
        net.penalties(f)[..],
        [ProtocolError::BlockLength { chunk: 2, block: 0, got: 10, expected }] if expected == 40_000 - 32 * 1024
    ));
}

#[test]
fn request_for_a_chunk_not_held_is_refused_without_data() {
    let data = file(40_000);
    let (mut net, s, f, cid) = connected_pair(&data);
    // The seeder asks the empty fetcher for a chunk it never announced.
    net.inject(s, f, Body::Interested, cid);
    net.inject(s, f, Body::Request { chunk: 0, block: 0 }, cid);
    net.inject(s, f, Body::Request { chunk: 0, block: 7 }, cid);
    assert_eq!(
        net.penalties(f),
        vec![
            ProtocolError::ChunkNotHeld(0),
            ProtocolError::OutOfRange { chunk: 0, block: 7 }
        ]
    );
    assert_eq!(net.sent_count(f, s, "swarm_block"), 0);
    // A malformed bitfield is the third strike.
    net.inject(s, f, Body::Bitfield(peerlab_swarm::Bitfield::new(99)), cid);
    assert_eq!(net.penalties(f).last(), Some(&ProtocolError::Bitfield));
    assert_eq!(net.core(f).banned(&cid), vec![s]);
}

#[test]
fn messages_from_unconnected_peers_are_ignored() {
    let data = file(40_000);
    let (mut net, _s, f, cid) = connected_pair(&data);
    let before = net.core(f).stats(&cid).unwrap();
    let stranger = PeerId::synthetic(77);
    net.inject(stranger, f, Body::Have { chunk: 0 }, cid);
    net.inject(stranger, f, Body::Unchoke, cid);
    assert!(net.penalties(f).is_empty(), "a race, not an attack");
    assert_eq!(net.core(f).stats(&cid).unwrap(), before);
    assert!(
        net.sent().iter().all(|m| m.to != stranger),
        "no requests to a stranger"
    );
}

#[test]
fn corrupt_peer_is_banned_and_the_file_still_verifies() {
    let mut net = new_net();
    let s = net.add_node(1);
    let bad = net.add_node(2);
    let f = net.add_node(3);
    let data = file(200_000);
    let (_, cid) = share(&mut net, s, &data, 16 * 1024, false);
    share(&mut net, bad, &data, 16 * 1024, true);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![bad, s],
        },
    );
    net.run(secs(600));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    let rejected: Vec<_> = net
        .events()
        .iter()
        .filter_map(|(_, p, e)| match e {
            Event::ChunkRejected { from, .. } if *p == f => Some(from.clone()),
            _ => None,
        })
        .collect();
    assert!(!rejected.is_empty());
    // Every rejected chunk had the corrupt peer among its senders; it is banned, the
    // honest seeder is not.
    assert!(rejected.iter().all(|from| from.contains(&bad)));
    assert_eq!(net.core(f).banned(&cid), vec![bad]);
    assert!(net.core(f).stats(&cid).unwrap().corrupt_chunks >= 1);
}

#[test]
fn endgame_duplicates_the_last_requests_and_cancels_the_rest() {
    let mut net = new_net();
    let s1 = net.add_node(1);
    let s2 = net.add_node(2);
    let f = net.add_node(3);
    // One chunk of four blocks: the first unchoking seeder gets all four requests, the
    // second gets endgame duplicates, and whichever answers second is cancelled.
    let data = file(64 * 1024);
    let (_, cid) = share(&mut net, s1, &data, 64 * 1024, false);
    share(&mut net, s2, &data, 64 * 1024, false);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![s1, s2],
        },
    );
    net.run(secs(60));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    let req = net.sent_count(f, s1, "swarm_request") + net.sent_count(f, s2, "swarm_request");
    let cancels = net.sent_count(f, s1, "swarm_cancel") + net.sent_count(f, s2, "swarm_cancel");
    assert!(req > 4, "endgame duplicated requests ({req})");
    assert!(cancels > 0, "endgame cancelled duplicates");
    let wasted = net.core(f).stats(&cid).unwrap().wasted;
    assert!(wasted <= (req as u64 - 4) * 16 * 1024);
}

#[test]
fn a_chunk_rejected_in_endgame_is_asked_for_again() {
    // One chunk of four blocks, three seeders: `s` (honest) and `bad` (corrupt) get the
    // requests and their endgame duplicates; `s2` (honest) unchoked us but had nothing
    // left to give, so with "request now" interest we told it `NotInterested`. Of `s`'s
    // blocks only the last arrives, so the chunk completes mixed with `bad`'s and fails;
    // the retry asks `s2` for all four blocks. The cancels of the failed round's
    // duplicates once also cancelled the retry's request for the block that completed the
    // chunk, leaving it "requested" from no one and the download stalled for good.
    let mut stalled = 0;
    for seed in 0..16u64 {
        let mut net = new_net();
        let s = net.add_node(10 * seed + 1);
        let bad = net.add_node(10 * seed + 2);
        let s2 = net.add_node(10 * seed + 4);
        let f = net.add_with(
            10 * seed + 3,
            Config {
                release_idle_interest: true,
                ..Config::default()
            },
        );
        let data = file(64 * 1024);
        let (_, cid) = share(&mut net, s, &data, 64 * 1024, false);
        share(&mut net, bad, &data, 64 * 1024, true);
        share(&mut net, s2, &data, 64 * 1024, false);
        net.command(
            f,
            Command::Fetch {
                req: 1,
                cid,
                providers: vec![s, bad, s2],
            },
        );
        // `s`'s blocks other than the last are lost on the way.
        net.set_filter(move |m| {
            !(m.from == s
                && m.to == f
                && matches!(m.msg.body, Body::Block { block, .. } if block != 3))
        });
        net.run_bounded(secs(600), 100_000);
        if contents(&net, f, &cid).as_deref() != Some(&data[..]) {
            stalled += 1;
        }
    }
    assert_eq!(stalled, 0, "downloads stalled");
}

#[test]
fn a_fetch_that_found_no_provider_looks_again_until_one_appears() {
    // The fetcher's first look-up ran before the file was shared anywhere (in a real
    // network: before the sharers' announcements were stored). It has no manifest and
    // nobody to ask, and must look again — soon at first, then less often.
    let mut net = new_net();
    let f = net.add_node(1);
    let s = net.add_node(2);
    let data = file(100_000);
    let cid = Manifest::from_bytes("f.bin", &data, 16 * 1024)
        .unwrap()
        .content_id();
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![],
        },
    );
    let lookups = |net: &Net| {
        net.events()
            .iter()
            .filter(|(_, p, e)| {
                *p == f
                    && matches!(
                        e,
                        Event::Discovery(peerlab_swarm::Discovery::FindProviders { .. })
                    )
            })
            .count()
    };
    net.run(secs(4));
    assert_eq!(lookups(&net), 1);
    net.run(secs(36));
    let early = lookups(&net);
    assert!(early >= 4, "looked {early} times in 36 s");
    net.run(secs(600));
    let late = lookups(&net) - early;
    assert!(
        late <= 600 / 60 + 1,
        "backed off to the lookup interval: {late} look-ups in the last 564 s"
    );
    // A look-up finds the sharer: the fetch completes.
    share(&mut net, s, &data, 16 * 1024, false);
    net.command(
        f,
        Command::AddPeers {
            cid,
            peers: vec![s],
        },
    );
    net.run(secs(1200));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
}

#[test]
fn fetch_announces_and_looks_up_providers() {
    let mut net = new_net();
    let s = net.add_node(1);
    let f = net.add_node(2);
    let data = file(10_000);
    let (_, cid) = share(&mut net, s, &data, 4096, false);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![s],
        },
    );
    net.run(secs(16 * 60));
    use peerlab_swarm::Discovery;
    let disc = |p: PeerId| -> Vec<Discovery> {
        net.events()
            .iter()
            .filter_map(|(_, q, e)| match e {
                Event::Discovery(d) if *q == p => Some(d.clone()),
                _ => None,
            })
            .collect()
    };
    let key = cid.dht_key();
    assert_eq!(key, peerlab_overlay::Id::hash(&cid.0));
    let ds = disc(s);
    // Announced at share time and re-announced after 15 minutes.
    assert_eq!(ds.len(), 2);
    assert!(ds.iter().all(|d| matches!(d, Discovery::Announce { key: k, ttl, .. } if *k == key && *ttl == Duration::from_secs(3600))));
    let df = disc(f);
    assert!(matches!(df[0], Discovery::FindProviders { key: k, .. } if k == key));
    assert!(df.iter().any(|d| matches!(d, Discovery::Announce { .. })));
}

/// A sharer whose announcement the DHT could not store (not in the ring yet, a failed
/// lookup) announces again after 2 s, then 4 s, … and once one is stored, only at the
/// periodic interval again: it is not unfindable for the 15 minutes in between.
#[test]
fn a_failed_announcement_is_retried_with_backoff() {
    use peerlab_overlay::Instant;
    use peerlab_swarm::{ANNOUNCE_RETRY, Discovery};
    let mut net = new_net();
    let s = net.add_node(1);
    let data = file(10_000);
    let (_, cid) = share(&mut net, s, &data, 4096, false);
    let announced = |net: &Net| {
        net.events()
            .iter()
            .filter(|(_, q, e)| {
                *q == s && matches!(e, Event::Discovery(Discovery::Announce { .. }))
            })
            .count()
    };
    let after = |net: &Net, d: Duration| Instant(net.now().0 + d.as_micros() as u64);
    let fail = |net: &mut Net| net.command(s, Command::Announced { cid, stored: false });
    let shared_at = net.now();
    assert_eq!(announced(&net), 1, "announced when shared");
    let ms = Duration::from_millis;
    fail(&mut net);
    let t = after(&net, ANNOUNCE_RETRY - ms(10));
    net.run(t);
    assert_eq!(announced(&net), 1, "not before the retry delay");
    let t = after(&net, ms(20));
    net.run(t);
    assert_eq!(
        announced(&net),
        2,
        "again {ANNOUNCE_RETRY:?} after a failure"
    );
    fail(&mut net);
    let t = after(&net, 2 * ANNOUNCE_RETRY - ms(10));
    net.run(t);
    assert_eq!(announced(&net), 2, "the second retry waits twice as long");
    let t = after(&net, ms(20));
    net.run(t);
    assert_eq!(announced(&net), 3);
    let stored = |net: &Net| net.core(s).stats(&cid).unwrap().announcements;
    assert_eq!(
        stored(&net),
        0,
        "failed announcements are not counted as stored"
    );
    net.command(s, Command::Announced { cid, stored: true });
    assert_eq!(stored(&net), 1, "the stored announcement is counted");
    net.run(Instant(shared_at.0 + secs(15 * 60).0 - 1_000_000));
    assert_eq!(
        announced(&net),
        3,
        "stored: nothing until the periodic announcement"
    );
    net.run(Instant(shared_at.0 + secs(15 * 60).0 + 1_000_000));
    assert_eq!(
        announced(&net),
        4,
        "the periodic announcement 15 minutes after sharing"
    );
}

#[test]
fn duplicate_and_incomplete_shares_are_refused() {
    let mut net = new_net();
    let s = net.add_node(1);
    let data = file(10_000);
    let (m, cid) = share(&mut net, s, &data, 4096, false);
    share(&mut net, s, &data, 4096, false);
    net.command(
        s,
        Command::Share {
            req: 1,
            manifest: Manifest::from_bytes("g", &data, 4096).unwrap(),
            store: TestStore {
                inner: MemoryStore::empty(&m),
                poison: Poison::Never,
            },
        },
    );
    let refusals: Vec<_> = net
        .events()
        .iter()
        .filter_map(|(_, _, e)| match e {
            Event::Refused { error, .. } => Some(error.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(net.core(s).stats(&cid).is_some());
}

#[test]
fn manifest_is_asked_from_several_providers_at_once() {
    let mut net = new_net();
    let s = net.add_node(1);
    let f = net.add_node(2);
    let (_, cid) = share(&mut net, s, &file(10), 1024, false);
    // Providers that are not nodes: their requests go unanswered.
    let providers: Vec<PeerId> = (10..15).map(PeerId::synthetic).collect();
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: providers.clone(),
        },
    );
    let asked = providers
        .iter()
        .filter(|p| net.sent_count(f, **p, "swarm_manifest_request") == 1)
        .count();
    assert_eq!(asked, Config::default().manifest_fanout);
    assert_eq!(asked, 3);
}

/// Peer `p` opens a transfer of `cid` with `s`: handshake, its bitfield, interest.
fn connect_interested(
    net: &mut Net,
    p: PeerId,
    s: PeerId,
    cid: ContentId,
    bits: peerlab_swarm::Bitfield,
) {
    net.inject(p, s, Body::Handshake, cid);
    net.inject(p, s, Body::Bitfield(bits), cid);
    net.inject(p, s, Body::Interested, cid);
}

/// A super-seeder connected to two fake peers `a` and `b` (handshakes injected); both
/// declared interest and were unchoked. Returns the chunks revealed to `b`.
fn super_seeder_with_two_peers() -> (Net, PeerId, PeerId, PeerId, ContentId, Vec<u32>) {
    let mut net = new_net();
    let s = net.add_node(1);
    // 128 KiB chunks (8 blocks): the default pipeline of 8 blocks spans one chunk, so the
    // seeder keeps the default 2 revealed (see
    // `a_super_seeder_reveals_more_to_a_peer_whose_queue_spans_every_chunk_shown`).
    let data = file(8 * 128 * 1024);
    let (m, cid) = share(&mut net, s, &data, 128 * 1024, false);
    assert!(Config::default().super_seed);
    let (a, b) = (PeerId::synthetic(20), PeerId::synthetic(21));
    for p in [a, b] {
        connect_interested(
            &mut net,
            p,
            s,
            cid,
            peerlab_swarm::Bitfield::new(m.chunk_count()),
        );
        assert_eq!(net.sent_count(s, p, "swarm_unchoke"), 1);
    }
    let revealed_b: Vec<u32> = net
        .sent()
        .iter()
        .filter(|m| m.from == s && m.to == b)
        .filter_map(|m| match m.msg.body {
            Body::Have { chunk } => Some(chunk),
            _ => None,
        })
        .collect();
    assert_eq!(revealed_b.len(), Config::default().super_seed_reveals);
    (net, s, a, b, cid, revealed_b)
}

/// Chunks `s` has revealed to `p` with `Have`, in order.
fn shown_to(net: &Net, s: PeerId, p: PeerId) -> Vec<u32> {
    net.sent()
        .iter()
        .filter_map(|m| match m.msg.body {
            Body::Have { chunk } if m.from == s && m.to == p => Some(chunk),
            _ => None,
        })
        .collect()
}

#[test]
fn a_super_seeder_reveals_more_to_a_peer_whose_queue_spans_every_chunk_shown() {
    // 64 KiB chunks of four 16 KiB blocks. The seeder starts every peer at the floor of 2
    // chunks; a peer that asks for every chunk shown is shown one more each time, up to
    // twice the chunks the seeder's own queue cap spans.
    for (cap_blocks, cap_chunks) in [(16usize, 8usize), (8, 4)] {
        let mut net = new_net();
        let config = Config {
            pipeline_depth: cap_blocks,
            min_pipeline_depth: cap_blocks.min(Config::default().min_pipeline_depth),
            ..Config::default()
        };
        let s = net.add_with(1, config);
        let data = file(32 * 64 * 1024);
        let (m, cid) = share(&mut net, s, &data, 64 * 1024, false);
        let deep = PeerId::synthetic(30);
        connect_interested(
            &mut net,
            deep,
            s,
            cid,
            peerlab_swarm::Bitfield::new(m.chunk_count()),
        );
        assert_eq!(shown_to(&net, s, deep).len(), 2, "the floor first");
        let mut asked = std::collections::BTreeSet::new();
        loop {
            let fresh: Vec<u32> = shown_to(&net, s, deep)
                .into_iter()
                .filter(|c| !asked.contains(c))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for chunk in fresh {
                asked.insert(chunk);
                net.inject(deep, s, Body::Request { chunk, block: 0 }, cid);
            }
        }
        assert_eq!(
            shown_to(&net, s, deep).len(),
            cap_chunks,
            "cap {cap_blocks}"
        );
        // A chunk announced back is replaced: the count stays at what the peer earned.
        let first = shown_to(&net, s, deep)[0];
        net.inject(deep, s, Body::Have { chunk: first }, cid);
        assert_eq!(shown_to(&net, s, deep).len(), cap_chunks + 1);

        // A queue that fits in one chunk asks for one chunk at a time: never shown more.
        let shallow = PeerId::synthetic(31);
        connect_interested(
            &mut net,
            shallow,
            s,
            cid,
            peerlab_swarm::Bitfield::new(m.chunk_count()),
        );
        let chunk = shown_to(&net, s, shallow)[0];
        for block in 0..4 {
            net.inject(shallow, s, Body::Request { chunk, block }, cid);
        }
        assert_eq!(shown_to(&net, s, shallow).len(), 2, "cap {cap_blocks}");
    }
}

#[test]
fn super_seeder_refuses_a_second_copy_while_chunks_are_unsent() {
    let (mut net, s, a, b, cid, revealed_b) = super_seeder_with_two_peers();
    // `a` gets chunk `c` first (a peer may ask for any chunk the seeder holds).
    let c = revealed_b[0];
    net.inject(a, s, Body::Request { chunk: c, block: 0 }, cid);
    assert_eq!(net.sent_count(s, a, "swarm_block"), 1);
    let haves_before = net.sent_count(s, b, "swarm_have");
    // `b` asks for the chunk that already went to `a`: refused, and `b` is shown a chunk
    // nobody has instead. The seeder's upload stays on chunks not yet sent.
    net.inject(b, s, Body::Request { chunk: c, block: 0 }, cid);
    assert_eq!(net.sent_count(s, b, "swarm_block"), 0);
    assert_eq!(net.sent_count(s, b, "swarm_reject"), 1);
    assert_eq!(net.sent_count(s, b, "swarm_have"), haves_before + 1);
    // `a` itself gets the rest of the chunk it started.
    net.inject(a, s, Body::Request { chunk: c, block: 0 }, cid);
    assert_eq!(net.sent_count(s, a, "swarm_block"), 2);
    // A chunk never sent is served to `b` at once.
    let fresh = revealed_b[1];
    net.inject(
        b,
        s,
        Body::Request {
            chunk: fresh,
            block: 0,
        },
        cid,
    );
    assert_eq!(net.sent_count(s, b, "swarm_block"), 1);
}

#[test]
fn a_chunk_refused_while_unchoked_is_not_asked_again_from_that_peer() {
    let data = file(64 * 1024);
    let (mut net, s, f, cid) = connected_pair(&data);
    // The seeder shows every chunk and unchokes; the fetcher asks; its first request is
    // refused.
    for chunk in 0..4 {
        net.inject(s, f, Body::Have { chunk }, cid);
    }
    net.inject(s, f, Body::Unchoke, cid);
    let first = net.sent().iter().rev().find_map(|m| match m.msg.body {
        Body::Request { chunk, block } if m.from == f && m.to == s => Some((chunk, block)),
        _ => None,
    });
    let Some((chunk, block)) = first else {
        panic!("the fetcher requested nothing after the unchoke");
    };
    net.take_in_flight();
    let before = net.sent().len();
    net.inject(s, f, Body::Reject { chunk, block }, cid);
    let asked_again = net.sent()[before..].iter().any(|m| {
        m.from == f
            && m.to == s
            && matches!(m.msg.body, Body::Request { chunk: c, .. } if c == chunk)
    });
    assert!(
        !asked_again,
        "chunk {chunk} asked again from the peer that refused it"
    );
    // A fresh unchoke lifts the refusal.
    net.inject(s, f, Body::Choke, cid);
    net.inject(s, f, Body::Unchoke, cid);
    let lifted = net.sent()[before..].iter().any(|m| {
        m.from == f
            && m.to == s
            && matches!(m.msg.body, Body::Request { chunk: c, .. } if c == chunk)
    });
    assert!(
        lifted,
        "chunk {chunk} never asked again after a new unchoke"
    );
}

/// An uploader with `upload_rate` (1 MB/s: a 16 KiB block takes ~16 ms, the default 30 ms
/// horizon holds two) and no super-seeding, sharing four 64 KiB chunks (four blocks each),
/// with fake peers `a` and `b` connected, interested and unchoked.
fn paced_uploader(upload_rate: Option<u64>) -> (Net, PeerId, PeerId, PeerId, ContentId) {
    let mut net = new_net();
    let config = Config {
        super_seed: false,
        upload_rate,
        ..Config::default()
    };
    let s = net.add_with(1, config);
    let data = file(256 * 1024);
    let (m, cid) = share(&mut net, s, &data, 64 * 1024, false);
    assert_eq!(m.block_count(0), 4);
    let (a, b) = (PeerId::synthetic(20), PeerId::synthetic(21));
    for p in [a, b] {
        connect_interested(
            &mut net,
            p,
            s,
            cid,
            peerlab_swarm::Bitfield::new(m.chunk_count()),
        );
        assert_eq!(net.sent_count(s, p, "swarm_unchoke"), 1);
    }
    // `a` asks for chunk 0 and `b` for chunk 1, their requests interleaved as two
    // pipelined downloaders' requests arrive.
    for block in 0..4 {
        net.inject(a, s, Body::Request { chunk: 0, block }, cid);
        net.inject(b, s, Body::Request { chunk: 1, block }, cid);
    }
    (net, s, a, b, cid)
}

/// The blocks `s` sent, in order, as (receiver, chunk, block).
fn blocks_sent(net: &Net, s: PeerId) -> Vec<(PeerId, u32, u32)> {
    net.sent()
        .iter()
        .filter(|m| m.from == s)
        .filter_map(|m| match m.msg.body {
            Body::Block { chunk, block, .. } => Some((m.to, chunk, block)),
            _ => None,
        })
        .collect()
}

#[test]
fn paced_uploader_serves_one_chunk_before_the_next() {
    let (mut net, s, a, b, _) = paced_uploader(Some(1_000_000));
    net.run(secs(5));
    // The first two blocks fill the driver's queue up to the horizon in arrival order;
    // from then on `a`'s chunk has the turn and leaves whole before `b`'s continues.
    assert_eq!(
        blocks_sent(&net, s),
        vec![
            (a, 0, 0),
            (b, 1, 0),
            (a, 0, 1),
            (a, 0, 2),
            (a, 0, 3),
            (b, 1, 1),
            (b, 1, 2),
            (b, 1, 3),
        ]
    );
    // Without an upload rate every block goes to the driver at once, interleaved.
    let (mut net, s, a, b, _) = paced_uploader(None);
    net.run(secs(5));
    let fifo = blocks_sent(&net, s);
    assert_eq!(fifo.len(), 8);
    assert_eq!(&fifo[..4], &[(a, 0, 0), (b, 1, 0), (a, 0, 1), (b, 1, 1)]);
}

#[test]
fn paced_uploader_rejects_queued_requests_on_choke_and_honours_cancel() {
    let (mut net, s, a, b, cid) = paced_uploader(Some(1_000_000));
    // `a` loses interest: it is choked and its three requests still queued are refused.
    net.inject(a, s, Body::NotInterested, cid);
    assert_eq!(net.sent_count(s, a, "swarm_choke"), 1);
    assert_eq!(net.sent_count(s, a, "swarm_reject"), 3);
    // `b` cancels a queued request: that block is never sent.
    net.inject(b, s, Body::Cancel { chunk: 1, block: 2 }, cid);
    net.run(secs(5));
    assert_eq!(
        blocks_sent(&net, s),
        vec![(a, 0, 0), (b, 1, 0), (b, 1, 1), (b, 1, 3)]
    );
}

#[test]
fn paced_transfer_is_byte_identical() {
    let mut net = new_net();
    let config = Config {
        upload_rate: Some(1_000_000),
        ..Config::default()
    };
    let s = net.add_with(1, config.clone());
    let f = net.add_with(2, config);
    let data = file(300_001);
    let (_, cid) = share(&mut net, s, &data, 64 * 1024, false);
    net.command(
        f,
        Command::Fetch {
            req: 1,
            cid,
            providers: vec![s],
        },
    );
    net.run(secs(60));
    assert_eq!(contents(&net, f, &cid).as_deref(), Some(&data[..]));
    assert!(net.penalties(f).is_empty() && net.penalties(s).is_empty());
}

#[test]
fn paced_uploader_gives_the_next_turn_to_a_peer_holding_nothing() {
    let mut net = new_net();
    let config = Config {
        super_seed: false,
        upload_rate: Some(1_000_000),
        ..Config::default()
    };
    let s = net.add_with(1, config);
    let data = file(256 * 1024);
    let (m, cid) = share(&mut net, s, &data, 64 * 1024, false);
    let (a, b, c) = (
        PeerId::synthetic(20),
        PeerId::synthetic(21),
        PeerId::synthetic(22),
    );
    for p in [a, b, c] {
        let mut bits = peerlab_swarm::Bitfield::new(m.chunk_count());
        if p == a {
            bits.set(3); // `a` already holds a chunk; `b` and `c` hold nothing
        }
        connect_interested(&mut net, p, s, cid, bits);
    }
    // `c`'s chunk 2 takes the uplink; then `a` asks for chunk 0, later `b` for chunk 1.
    for (peer, chunk) in [(c, 2), (a, 0), (b, 1)] {
        for block in 0..4 {
            net.inject(peer, s, Body::Request { chunk, block }, cid);
        }
    }
    net.run(secs(5));
    let order: Vec<PeerId> = blocks_sent(&net, s).iter().map(|(p, _, _)| *p).collect();
    // After `c`'s chunk, `b` (nothing to share yet) gets its chunk before `a`, although
    // `a` asked first.
    assert_eq!(order, [vec![c; 4], vec![b; 4], vec![a; 4]].concat());
}

/// The order in which a paced uploader serves three peers after `c`'s chunk 2: `a` asks
/// first for chunk 0, which five other neighbours hold, then `b` for chunk 1, which nobody
/// else holds. `a`, `b` and `c` each hold chunk 3, so none of them is new.
fn turns_after_a_common_and_a_scarce_request(scarce_holders: Option<u32>) -> Vec<PeerId> {
    let mut net = new_net();
    let config = Config {
        super_seed: false,
        upload_rate: Some(1_000_000),
        scarce_holders,
        ..Config::default()
    };
    let s = net.add_with(1, config);
    let data = file(256 * 1024);
    let (m, cid) = share(&mut net, s, &data, 64 * 1024, false);
    let bits = |chunk: u32| {
        let mut b = peerlab_swarm::Bitfield::new(m.chunk_count());
        b.set(chunk);
        b
    };
    // Five neighbours holding chunk 0 and wanting nothing from us.
    for i in 30..35 {
        let p = PeerId::synthetic(i);
        net.inject(p, s, Body::Handshake, cid);
        net.inject(p, s, Body::Bitfield(bits(0)), cid);
    }
    let (a, b, c) = (
        PeerId::synthetic(20),
        PeerId::synthetic(21),
        PeerId::synthetic(22),
    );
    for p in [a, b, c] {
        connect_interested(&mut net, p, s, cid, bits(3));
        assert_eq!(net.sent_count(s, p, "swarm_unchoke"), 1);
    }
    for (peer, chunk) in [(c, 2), (a, 0), (b, 1)] {
        for block in 0..4 {
            net.inject(peer, s, Body::Request { chunk, block }, cid);
        }
    }
    net.run(secs(5));
    blocks_sent(&net, s).iter().map(|(p, _, _)| *p).collect()
}

#[test]
fn paced_uploader_gives_the_next_turn_to_a_chunk_few_neighbours_hold() {
    let (a, b, c) = (
        PeerId::synthetic(20),
        PeerId::synthetic(21),
        PeerId::synthetic(22),
    );
    assert_eq!(Config::default().scarce_holders, Some(4));
    // `b`'s chunk, held by no other neighbour, goes before `a`'s, although `a` asked first.
    assert_eq!(
        turns_after_a_common_and_a_scarce_request(Some(4)),
        [vec![c; 4], vec![b; 4], vec![a; 4]].concat()
    );
    // Oldest first without the rule.
    assert_eq!(
        turns_after_a_common_and_a_scarce_request(None),
        [vec![c; 4], vec![a; 4], vec![b; 4]].concat()
    );
}
