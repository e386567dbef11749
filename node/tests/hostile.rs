//! A hostile peer against real nodes over QUIC.
//!
//! Three honest nodes run in-process: A writes a DHT key, B shares a file that C fetches.
//! The attacker is a plain rust-libp2p peer with a key of its own that dials them over QUIC
//! and speaks the nodes' real wire (one length-prefixed stream per protocol, `codec` frames,
//! the cores' own message types; docs/wire.md). It sends what an open network must expect:
//!
//! - DHT `Store`s for A's key: a record re-signed with the attacker's key (a newer version
//!   with the attacker's own claim), a far-future version, and a record in A's name with a
//!   garbage signature;
//! - swarm blocks nobody asked it for, into C's fetch while it runs (after a handshake, so
//!   the attacker is a peer of the transfer);
//! - gossip member records that give B forged addresses at a higher incarnation (a garbage
//!   signature, and one made with the attacker's key).
//!
//! A proven forgery bans its sender at once (`Offence::PROVEN` is the ban threshold), so
//! every node gets the mild attacks first and exactly one forgery last; the test waits for
//! each step's charge (the attacker's strike points in the node's `/peers`, or the node's
//! offence counters) before the next, since frames on different streams are not ordered.
//! Afterwards the honest nodes read A's value, C's file is byte-identical, B's member record
//! is unchanged everywhere, honest traffic still works, and every honest node has banned
//! the attacker (and only it) and refuses its new connections.

// Tests measure real deadlines and stamp records with the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Net, wait_for};
use peerlab_dht::{Id, Keypair, Record, Signature, Version};
use peerlab_gossip::{MEMBER_DOMAIN, MemberState, MemberUpdate};
use peerlab_node::Node;
use peerlab_node::client::Client;
use peerlab_node::config::Transport;
use peerlab_node::libp2p::futures::{AsyncWriteExt, StreamExt};
use peerlab_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use peerlab_node::libp2p::{self, Multiaddr, StreamProtocol, Swarm};
use peerlab_node::wire::{Channel, StreamFrame, read_stream_frame, write_stream_frame};
use peerlab_overlay::codec;
use peerlab_swarm::{BLOCK_SIZE, Bitfield, Body, ContentId};
use tokio::sync::mpsc;

/// The key A writes and the attacker tries to take.
const KEY: &str = "k";
/// A's value.
const HONEST: &str = "written by A";
/// The file C fetches from B: 32 MiB, so the fetch is still running when the attacker's
/// blocks arrive (a few milliseconds after it joined the transfer).
const FILE_LEN: usize = 32 << 20;
/// Unsolicited blocks the attacker sends C (each one strike point; with the two refused
/// records before them, two short of a ban, so the forgery after them is what bans).
const BLOCKS: u32 = 8;
/// The address the attacker claims for B.
const FORGED_ADDR: &str = "/ip4/203.0.113.66/udp/4001/quic-v1";

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "peerlab_node::libp2p::swarm::derive_prelude")]
struct Raw {
    stream: libp2p_stream::Behaviour,
}

/// What the attacker's network task reports.
#[derive(Debug)]
enum Conn {
    Up(libp2p::PeerId),
    Down(libp2p::PeerId),
    DialFailed(String),
}

/// The hostile peer: a libp2p swarm with the stream behaviour, run by a task of its own,
/// and the streams it opened to each node (one per protocol, as a node keeps them).
struct Attacker {
    key: Keypair,
    id: libp2p::PeerId,
    control: libp2p_stream::Control,
    dial: mpsc::UnboundedSender<Multiaddr>,
    conns: mpsc::UnboundedReceiver<Conn>,
    swarm_msgs: mpsc::UnboundedReceiver<(libp2p::PeerId, peerlab_swarm::Message)>,
    streams: BTreeMap<(libp2p::PeerId, usize), libp2p::Stream>,
}

impl Attacker {
    /// Starts the attacker's swarm (QUIC only). It accepts the nodes' streams to it and
    /// reads them, passing on the swarm messages (it needs C's bitfield).
    async fn start() -> Attacker {
        let key = Keypair::from_secret([0xa7; 32]);
        let identity = libp2p::identity::Keypair::ed25519_from_bytes(key.secret()).unwrap();
        let mut swarm: Swarm<Raw> = libp2p::SwarmBuilder::with_existing_identity(identity)
            .with_tokio()
            .with_quic()
            .with_behaviour(|_| Raw {
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let id = *swarm.local_peer_id();
        let mut control = swarm.behaviour().stream.new_control();

        let (msg_tx, swarm_msgs) = mpsc::unbounded_channel();
        for ch in Channel::ALL {
            let mut incoming = control.accept(StreamProtocol::new(ch.protocol())).unwrap();
            let msg_tx = msg_tx.clone();
            tokio::spawn(async move {
                while let Some((peer, mut s)) = incoming.next().await {
                    let msg_tx = msg_tx.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(StreamFrame::Data(f))) =
                            read_stream_frame(&mut s, ch.max_frame()).await
                        {
                            if ch == Channel::Swarm
                                && let Ok(m) = codec::decode::<peerlab_swarm::Message>(&f)
                            {
                                let _ = msg_tx.send((peer, m));
                            }
                        }
                    });
                }
            });
        }

        let (dial, mut dials) = mpsc::unbounded_channel::<Multiaddr>();
        let (conn_tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => {
                        let report = match ev {
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                                Some(Conn::Up(peer_id))
                            }
                            SwarmEvent::ConnectionClosed {
                                peer_id,
                                num_established: 0,
                                ..
                            } => Some(Conn::Down(peer_id)),
                            SwarmEvent::OutgoingConnectionError { error, .. } => {
                                Some(Conn::DialFailed(error.to_string()))
                            }
                            _ => None,
                        };
                        if let Some(r) = report {
                            let _ = conn_tx.send(r);
                        }
                    }
                    Some(addr) = dials.recv() => {
                        if let Err(e) = swarm.dial(addr) {
                            let _ = conn_tx.send(Conn::DialFailed(e.to_string()));
                        }
                    }
                }
            }
        });
        Attacker {
            key,
            id,
            control,
            dial,
            conns,
            swarm_msgs,
            streams: BTreeMap::new(),
        }
    }

    /// The attacker's name in the cores.
    fn overlay_id(&self) -> peerlab_overlay::PeerId {
        self.key.peer_id()
    }

    /// Dials `addr` and waits for a connection to `peer`; `Err` says why there is none.
    async fn connect(&mut self, addr: Multiaddr, peer: libp2p::PeerId) -> Result<(), String> {
        self.dial.send(addr).unwrap();
        loop {
            match self.conns.recv().await.expect("attacker task running") {
                Conn::Up(p) if p == peer => return Ok(()),
                Conn::Down(p) if p == peer => return Err("closed".into()),
                Conn::DialFailed(e) => return Err(e),
                _ => {}
            }
        }
    }

    /// Waits until the connection to `peer` is closed (by the node).
    async fn closed(&mut self, peer: libp2p::PeerId) {
        loop {
            match self.conns.recv().await.expect("attacker task running") {
                Conn::Down(p) if p == peer => return,
                _ => {}
            }
        }
    }

    /// Writes one frame to `peer` on `ch`'s stream (opened the first time).
    async fn send(&mut self, peer: libp2p::PeerId, ch: Channel, frame: Vec<u8>) {
        let key = (peer, ch.index());
        if !self.streams.contains_key(&key) {
            let s = self
                .control
                .open_stream(peer, StreamProtocol::new(ch.protocol()))
                .await
                .unwrap_or_else(|e| panic!("open a {} stream: {e}", ch.name()));
            self.streams.insert(key, s);
        }
        let s = self.streams.get_mut(&key).unwrap();
        let mut buf = Vec::new();
        write_stream_frame(&mut buf, &frame);
        s.write_all(&buf).await.unwrap();
        s.flush().await.unwrap();
    }

    async fn dht(&mut self, peer: libp2p::PeerId, record: Record) {
        let msg = peerlab_dht::Message::Store {
            records: vec![(Id::hash(KEY.as_bytes()), record)],
            providers: Vec::new(),
        };
        self.send(peer, Channel::Dht, codec::encode(&msg).unwrap())
            .await;
    }

    async fn swarm(&mut self, peer: libp2p::PeerId, cid: ContentId, body: Body) {
        let msg = peerlab_swarm::Message { cid, body };
        self.send(peer, Channel::Swarm, codec::encode(&msg).unwrap())
            .await;
    }

    async fn gossip(&mut self, peer: libp2p::PeerId, members: Vec<MemberUpdate>) {
        let msg = peerlab_gossip::Message::Gossip {
            seq: 1,
            feedback: false,
            members,
            entries: Vec::new(),
        };
        self.send(peer, Channel::Gossip, codec::encode(&msg).unwrap())
            .await;
    }

    /// Opens transfer `cid` with `peer` (handshakes until the node answers, which it does
    /// once its own transfer is active) and returns the bitfield it answered with.
    async fn join_transfer(&mut self, peer: libp2p::PeerId, cid: ContentId) -> Bitfield {
        loop {
            self.swarm(peer, cid, Body::Handshake).await;
            let answer = tokio::time::timeout(Duration::from_millis(200), async {
                loop {
                    let (from, m) = self.swarm_msgs.recv().await.expect("attacker task");
                    if from == peer
                        && m.cid == cid
                        && let Body::Bitfield(b) = m.body
                    {
                        return b;
                    }
                }
            })
            .await;
            if let Ok(b) = answer {
                return b;
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn version(wall_ms: u64, writer: peerlab_overlay::PeerId) -> Version {
    Version {
        wall_ms,
        logical: 0,
        writer,
    }
}

/// The attacker's strike points at the node behind `c` (0 when not connected).
fn strikes(c: &Client, attacker: &libp2p::PeerId) -> u32 {
    let id = attacker.to_string();
    c.peers()
        .unwrap()
        .iter()
        .find(|p| p.peer_id == id)
        .map_or(0, |p| p.strikes)
}

/// The node has banned exactly one peer and the attacker is no longer connected.
fn banned(c: &Client, attacker: &libp2p::PeerId) -> bool {
    let id = attacker.to_string();
    c.status().unwrap().banned_peers == 1 && c.peers().unwrap().iter().all(|p| p.peer_id != id)
}

/// Bounds every attacker step that waits on the network.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after 10 s: {what}"))
}

#[test]
fn forged_records_unsolicited_blocks_and_forged_members_get_the_attacker_banned() {
    let mut net = Net::new(Transport::Quic);
    let (a, b, c) = (net.start(), net.start(), net.start());
    let clients: Vec<Client> = [a, b, c].iter().map(|&i| net.node(i).client()).collect();
    let (ca, cb, cc) = (&clients[0], &clients[1], &clients[2]);
    wait_for(
        "every DHT joined and every node sees the two others alive",
        Duration::from_secs(20),
        || {
            clients.iter().all(|c| {
                c.status()
                    .map(|s| s.dht_joined && s.members_alive == 2 && s.connected_peers == 2)
                    .unwrap_or(false)
            })
        },
    );
    let ids: Vec<libp2p::PeerId> = [a, b, c].iter().map(|&i| net.node(i).peer_id()).collect();
    let a_overlay = net.node(a).overlay_id().unwrap();
    let b_overlay = net.node(b).overlay_id().unwrap();

    // A writes the key; every node holds a replica (R = 3 on three peers) and reads it.
    let stored = ca.kv_put(KEY, HONEST).unwrap();
    wait_for(
        "the record reaches all three replicas",
        Duration::from_secs(10),
        || {
            clients
                .iter()
                .all(|c| c.status().map(|s| s.dht_records >= 1).unwrap_or(false))
        },
    );
    for cl in &clients {
        assert_eq!(cl.kv_get(KEY).unwrap().value.as_deref(), Some(HONEST));
    }

    // B shares a file.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..FILE_LEN as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    let src = dir.path().join("shared.bin");
    std::fs::write(&src, &data).unwrap();
    let shared = cb.share(&src).unwrap();
    let cid = ContentId::from_hex(&shared.cid).unwrap();
    let chunk_len = (shared.size / u64::from(shared.chunks)) as usize;
    assert_eq!(chunk_len * shared.chunks as usize, FILE_LEN, "equal chunks");

    // B's member record (incarnation, every address, state) as A and C hold it.
    let record_of_b = |i: usize| {
        net.rt
            .block_on(net.node(i).driver().inspect(move |n: &mut Node, _| {
                n.peer()
                    .gossip()
                    .member(&b_overlay)
                    .map(|m| (m.incarnation, m.addrs.clone(), format!("{:?}", m.state)))
            }))
            .unwrap()
    };
    let b_before = record_of_b(a).expect("A knows B");
    assert_eq!(record_of_b(c), Some(b_before.clone()), "A and C agree on B");
    assert!(!b_before.1.is_empty(), "B announced its addresses");
    let b_incarnation = b_before.0;

    let mut atk = net.rt.block_on(Attacker::start());
    let atk_id = atk.id;
    let atk_overlay = atk.overlay_id();
    for &i in &[a, b, c] {
        let addr = net
            .node(i)
            .listen_addrs()
            .iter()
            .find(|a| a.to_string().contains("quic-v1"))
            .cloned()
            .unwrap();
        let peer = net.node(i).peer_id();
        net.rt
            .block_on(within("the attacker connects", atk.connect(addr, peer)))
            .unwrap_or_else(|e| panic!("the attacker connects to node {i}: {e}"));
    }

    // The DHT records. A newer version of the key under the attacker's own claim: without
    // ownership it would replace A's record (last writer wins).
    let t = now_ms();
    let resigned = Record::sign(
        &Id::hash(KEY.as_bytes()),
        Some(b"resigned by the attacker".to_vec()),
        version(t, atk_overlay),
        version(t, atk_overlay),
        t + 3_600_000,
        &atk.key,
    );
    // A year ahead: without the skew bound nothing could ever overwrite it.
    let far = t + 365 * 24 * 3_600_000;
    let far_future = Record::sign(
        &Id::hash(KEY.as_bytes()),
        Some(b"far future".to_vec()),
        version(far, atk_overlay),
        version(far, atk_overlay),
        far + 3_600_000,
        &atk.key,
    );
    // In A's name, a second newer than A's write: only the signature gives it away.
    let in_a_name = Record {
        version: version(t + 1_000, a_overlay),
        since: version(t + 1_000, a_overlay),
        expires_ms: t + 3_600_000,
        value: Some(b"forged in A's name".to_vec()),
        signature: Signature([0x5a; 64]),
    };
    // B's record at a higher incarnation with the attacker's address: one with a garbage
    // signature, one signed with the attacker's key over B's statement.
    let mut forged_b = MemberUpdate {
        peer: b_overlay,
        incarnation: b_incarnation + 1,
        state: MemberState::Alive,
        addrs: vec![FORGED_ADDR.to_string()],
        signature: Signature([0x5a; 64]),
    };
    let mut signed_by_attacker = forged_b.clone();
    signed_by_attacker.incarnation += 1;
    signed_by_attacker.signature = atk
        .key
        .sign(MEMBER_DOMAIN, &signed_by_attacker.signed_bytes());
    forged_b.addrs.push("/ip4/203.0.113.67/tcp/4001".into());
    let forged_members = vec![forged_b, signed_by_attacker];

    // C: the refused records, then blocks into its running fetch, then forged members.
    let (ida, idb, idc) = (ids[0], ids[1], ids[2]);
    net.rt.block_on(async {
        atk.dht(idc, resigned.clone()).await;
        atk.dht(idc, far_future.clone()).await;
    });
    wait_for(
        "C charges the two refused records",
        Duration::from_secs(10),
        || strikes(cc, &atk_id) >= 2,
    );
    let out = dir.path().join("fetched.bin");
    cc.fetch(&shared.cid, Some(&out)).unwrap();
    let theirs = net.rt.block_on(within(
        "C answers the attacker's handshake",
        atk.join_transfer(idc, cid),
    ));
    eprintln!(
        "the attacker joined C's fetch at {}/{} chunks",
        theirs.count(),
        theirs.len()
    );
    assert!(
        theirs.count() < theirs.len(),
        "the fetch had finished before the attacker joined it; the blocks would not test \
         a running transfer"
    );
    let missing: Vec<u32> = (0..theirs.len())
        .rev()
        .filter(|&i| !theirs.get(i))
        .take(BLOCKS as usize)
        .collect();
    assert_eq!(
        missing.len(),
        BLOCKS as usize,
        "{} chunks missing",
        missing.len()
    );
    net.rt.block_on(async {
        for &chunk in &missing {
            let data = vec![0xee; (BLOCK_SIZE as usize).min(chunk_len)];
            atk.swarm(
                idc,
                cid,
                Body::Block {
                    chunk,
                    block: 0,
                    data: peerlab_swarm::bytes::Bytes::from(data),
                },
            )
            .await;
        }
    });
    wait_for(
        "C counts the unsolicited blocks as offences",
        Duration::from_secs(10),
        || {
            let m = cc.metrics().unwrap();
            common::counter(&m, "peerlab_offences_total", "offence=\"unsolicited\"")
                >= f64::from(BLOCKS)
        },
    );
    assert!(
        strikes(cc, &atk_id) >= BLOCKS,
        "the blocks were charged to the attacker"
    );
    net.rt.block_on(atk.gossip(idc, forged_members.clone()));
    net.rt.block_on(within(
        "C closes the attacker's connection",
        atk.closed(idc),
    ));
    wait_for("C bans the attacker", Duration::from_secs(10), || {
        banned(cc, &atk_id)
    });

    // A: the refused records, then forged members.
    net.rt.block_on(async {
        atk.dht(ida, resigned.clone()).await;
        atk.dht(ida, far_future.clone()).await;
    });
    wait_for(
        "A charges the two refused records",
        Duration::from_secs(10),
        || strikes(ca, &atk_id) >= 2,
    );
    net.rt.block_on(atk.gossip(ida, forged_members));
    net.rt.block_on(within(
        "A closes the attacker's connection",
        atk.closed(ida),
    ));
    wait_for("A bans the attacker", Duration::from_secs(10), || {
        banned(ca, &atk_id)
    });

    // B: the refused records, then the record in A's name.
    net.rt.block_on(async {
        atk.dht(idb, resigned).await;
        atk.dht(idb, far_future).await;
    });
    wait_for(
        "B charges the two refused records",
        Duration::from_secs(10),
        || strikes(cb, &atk_id) >= 2,
    );
    net.rt.block_on(atk.dht(idb, in_a_name));
    net.rt.block_on(within(
        "B closes the attacker's connection",
        atk.closed(idb),
    ));
    wait_for("B bans the attacker", Duration::from_secs(10), || {
        banned(cb, &atk_id)
    });

    // Each node counted what it was sent.
    let counts = |cl: &Client, offence: &str| {
        let m = cl.metrics().unwrap();
        common::counter(
            &m,
            "peerlab_offences_total",
            &format!("offence=\"{offence}\""),
        )
    };
    for (name, cl) in [("A", ca), ("B", cb), ("C", cc)] {
        assert!(counts(cl, "refused") >= 2.0, "{name}: refused records");
        assert!(counts(cl, "forged") >= 1.0, "{name}: the forgery");
        let m = cl.metrics().unwrap();
        assert_eq!(
            common::counter(&m, "peerlab_peers_banned_total", ""),
            1.0,
            "{name}: one ban, the attacker's"
        );
    }

    // A banned peer is refused when it comes back.
    let addr_a = net
        .node(a)
        .listen_addrs()
        .iter()
        .find(|x| x.to_string().contains("quic-v1"))
        .cloned()
        .unwrap();
    net.rt
        .block_on(within("A refuses the banned attacker", async {
            if atk.connect(addr_a, ida).await.is_ok() {
                atk.closed(ida).await;
            }
        }));

    // The fetch completes byte-identical.
    wait_for("C's fetch completes", Duration::from_secs(30), || {
        let p = cc.fetch_progress(&shared.cid).unwrap();
        assert!(p.error.is_none(), "{p:?}");
        p.done
    });
    assert!(
        std::fs::read(&out).unwrap() == data,
        "the fetched file differs"
    );

    // Every node still reads A's record, at A's version.
    for (name, cl) in [("A", ca), ("B", cb), ("C", cc)] {
        let v = cl.kv_get(KEY).unwrap();
        assert_eq!(v.value.as_deref(), Some(HONEST), "{name} reads A's value");
        assert_eq!(v.version, Some(stored.version), "{name} reads A's version");
    }

    // B's member record is unchanged at A and C, and nobody lists the forged address.
    assert_eq!(record_of_b(a), Some(b_before.clone()), "B at A");
    assert_eq!(record_of_b(c), Some(b_before), "B at C");
    for (name, cl) in [("A", ca), ("B", cb), ("C", cc)] {
        for m in cl.members().unwrap() {
            assert!(
                !m.address.as_deref().unwrap_or("").contains("203.0.113."),
                "{name} lists a forged address: {m:?}"
            );
            assert_ne!(m.peer_id, atk_id.to_string(), "{name} lists the attacker");
        }
    }

    // The honest nodes keep serving each other: a new write at C reads everywhere.
    cc.kv_put("after", "still serving").unwrap();
    for cl in &clients {
        assert_eq!(
            cl.kv_get("after").unwrap().value.as_deref(),
            Some("still serving")
        );
    }
    for cl in &clients {
        assert_eq!(cl.status().unwrap().connected_peers, 2, "honest links kept");
    }
}
