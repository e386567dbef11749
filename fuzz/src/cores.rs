//! The four protocol cores under fuzzing, each set up the same way every run.
//!
//! A target decodes the hostile stream into the core's `Message` type and delivers every
//! message to a real core: the decoders, every field check, signature verification and
//! state change behind them run on each input. Targets name only the message *type*, so a
//! new variant, field or signed record is fuzzed as soon as it exists.
//!
//! The node under test is set up to be talking to the hostile [`remote`] already (joining
//! its ring, its group, its neighbour set, fetching a file from it), so replies and data
//! the stream carries reach the code that handles them. The seed corpus is recorded from a
//! real conversation between this node and a real core in the remote's place
//! ([`record`]); since every step is deterministic, replaying a recording drives the node
//! under test through the same states, and mutations explore from there.

use std::collections::VecDeque;

use peerlab_overlay::{Keypair, PeerId, Protocol, codec, flood};
use peerlab_swarm::bytes::Bytes;
use peerlab_swarm::{Manifest, MemoryFactory, MemoryStore};

use crate::check;
use crate::harness::{self, FRAME_GAP, Node, SETTLE, Sent, local, local_key, remote, remote_key};
use crate::wire::Channel;

/// The message type of a core.
pub type Msg<C> = <<C as Core>::P as Protocol>::Message;
type Cmd<C> = <<C as Core>::P as Protocol>::Command;

/// A core and how a target sets it up.
pub trait Core {
    /// The core.
    type P: Protocol;
    /// The node channel its messages travel on (frame limit, stream framing).
    const CHANNEL: Channel;
    /// The node under test (identity [`local`]), started and set up to talk to [`remote`];
    /// with what that setup sent.
    fn local() -> (Node<Self::P>, Sent<Self::P>);
    /// A real core in the hostile peer's place (identity [`remote`]), for recordings.
    fn remote() -> (Node<Self::P>, Sent<Self::P>);
    /// What the node under test is told to do before frame `i` (so that the stream's
    /// replies can answer its requests).
    fn local_script(i: usize) -> Vec<Cmd<Self>>;
    /// What the remote is told to do at step `i` of a recording.
    fn script(i: usize) -> Vec<Cmd<Self>>;
}

/// Runs one fuzz input through the node under test of core `C` (the harness's module docs).
pub fn run<C: Core>(data: &[u8]) {
    let (mut node, _) = C::local();
    for (i, frame) in harness::frames(data, C::CHANNEL).into_iter().enumerate() {
        for cmd in C::local_script(i) {
            node.command(cmd);
        }
        node.advance(FRAME_GAP);
        if let Some(msg) = harness::decode::<Msg<C>>(&frame, C::CHANNEL) {
            check::round_trip(&msg);
            node.message(remote(), msg);
        }
    }
    node.advance(SETTLE);
}

/// Records `steps` steps of a conversation between the node under test and a real core in
/// the remote's place: the frames the remote sent, one per step (an empty frame where it
/// had nothing to send, which the node skips as it skips any frame that does not decode,
/// so replaying the frames through [`run`] repeats the conversation).
pub fn record<C: Core>(steps: usize) -> Vec<Vec<u8>> {
    let (mut a, to_b) = C::local();
    let (mut b, to_a) = C::remote();
    let mut inbox_b: VecDeque<Msg<C>> = VecDeque::new();
    let mut inbox_a: VecDeque<Msg<C>> = VecDeque::new();
    let route = |sent: Sent<C::P>, to: PeerId, inbox: &mut VecDeque<Msg<C>>| {
        inbox.extend(sent.into_iter().filter(|(t, _)| *t == to).map(|(_, m)| m));
    };
    route(to_b, remote(), &mut inbox_b);
    route(to_a, local(), &mut inbox_a);
    let mut frames = Vec::new();
    for i in 0..steps {
        for cmd in C::script(i) {
            route(b.command(cmd), local(), &mut inbox_a);
        }
        while let Some(m) = inbox_b.pop_front() {
            route(b.message(local(), m), local(), &mut inbox_a);
        }
        route(b.advance(FRAME_GAP), local(), &mut inbox_a);

        // The node under test does exactly what `run` does with one frame.
        for cmd in C::local_script(i) {
            route(a.command(cmd), remote(), &mut inbox_b);
        }
        route(a.advance(FRAME_GAP), remote(), &mut inbox_b);
        let frame = match inbox_a.pop_front() {
            Some(m) => codec::encode_with_limit(&m, C::CHANNEL.max_frame())
                .expect("a core's message encodes"),
            None => Vec::new(),
        };
        if let Some(msg) = harness::decode::<Msg<C>>(&frame, C::CHANNEL) {
            route(a.message(remote(), msg), remote(), &mut inbox_b);
        }
        frames.push(frame);
    }
    while frames.last().is_some_and(Vec::is_empty) {
        frames.pop();
    }
    frames
}

/// The Chord DHT (`peerlab_dht::Message` on `/peerlab/dht/*`): the node joins the ring
/// the remote created; the remote writes, reads, deletes and announces providers.
pub struct Dht;

fn dht_node(me: &Keypair, seed: u64) -> Node<peerlab_dht::Dht> {
    // Two virtual nodes instead of eight: the same code paths at a quarter of the cost per
    // input, so the fuzzer runs more inputs.
    let cfg = peerlab_dht::Config {
        vnodes: 2,
        ..peerlab_dht::Config::default()
    };
    let core = peerlab_dht::Dht::new(cfg, me.clone()).expect("valid DHT config");
    Node::new(core, Channel::Dht, seed)
}

impl Core for Dht {
    type P = peerlab_dht::Dht;
    const CHANNEL: Channel = Channel::Dht;

    fn local() -> (Node<Self::P>, Sent<Self::P>) {
        let mut n = dht_node(local_key(), 1);
        let mut sent = n.start();
        sent.extend(n.command(peerlab_dht::Command::Join {
            req: 1,
            bootstrap: vec![remote()],
        }));
        (n, sent)
    }

    fn remote() -> (Node<Self::P>, Sent<Self::P>) {
        let mut n = dht_node(remote_key(), 2);
        let mut sent = n.start();
        sent.extend(n.command(peerlab_dht::Command::Join {
            req: 1,
            bootstrap: vec![],
        }));
        (n, sent)
    }

    fn local_script(i: usize) -> Vec<Cmd<Self>> {
        use peerlab_dht::Command;
        let key = |k: &str| k.as_bytes().to_vec();
        match i {
            40..=47 => vec![Command::Put {
                req: 300 + i as u64,
                key: key(&format!("mine-{i}")),
                value: format!("mine {i}").into_bytes(),
                ttl: None,
            }],
            50..=53 => vec![Command::Get {
                req: 400 + i as u64,
                key: key(&format!("key-{}", i - 30)),
            }],
            55 => vec![Command::GetProviders {
                req: 500,
                key: peerlab_overlay::Id::hash(b"content"),
            }],
            56 => vec![Command::Lookup {
                req: 501,
                key: peerlab_overlay::Id::hash(b"elsewhere"),
            }],
            _ => vec![],
        }
    }

    fn script(i: usize) -> Vec<Cmd<Self>> {
        use peerlab_dht::Command;
        let key = |k: &str| k.as_bytes().to_vec();
        match i {
            20..=35 => vec![Command::Put {
                req: 100 + i as u64,
                key: key(&format!("key-{i}")),
                value: format!("value {i}").into_bytes(),
                ttl: None,
            }],
            60 => vec![Command::Get {
                req: 200,
                key: key("mine-40"),
            }],
            62 => vec![Command::Delete {
                req: 201,
                key: key("key-21"),
            }],
            64 => vec![Command::AddProvider {
                req: 202,
                key: peerlab_overlay::Id::hash(b"content"),
                ttl: std::time::Duration::from_secs(3600),
            }],
            66 => vec![Command::GetProviders {
                req: 203,
                key: peerlab_overlay::Id::hash(b"content"),
            }],
            68 => vec![Command::Lookup {
                req: 204,
                key: peerlab_overlay::Id::hash(b"somewhere"),
            }],
            _ => vec![],
        }
    }
}

/// Gossip (`peerlab_gossip::Message` on `/peerlab/gossip/*`): the node joins through the
/// remote, which publishes and deletes data.
pub struct Gossip;

fn gossip_node(me: &Keypair, seed: u64) -> Node<peerlab_gossip::Gossip> {
    let addrs = vec![format!("/ip4/127.0.0.1/udp/{}/quic-v1", 4000 + seed)];
    let core = peerlab_gossip::Gossip::new(me.clone(), addrs, peerlab_gossip::Config::default())
        .expect("valid gossip config");
    Node::new(core, Channel::Gossip, seed)
}

impl Core for Gossip {
    type P = peerlab_gossip::Gossip;
    const CHANNEL: Channel = Channel::Gossip;

    fn local() -> (Node<Self::P>, Sent<Self::P>) {
        let mut n = gossip_node(local_key(), 1);
        let mut sent = n.start();
        sent.extend(n.command(peerlab_gossip::Command::Join {
            seeds: vec![remote()],
        }));
        (n, sent)
    }

    fn remote() -> (Node<Self::P>, Sent<Self::P>) {
        let mut n = gossip_node(remote_key(), 2);
        let sent = n.start();
        (n, sent)
    }

    fn local_script(i: usize) -> Vec<Cmd<Self>> {
        match i {
            20 => vec![peerlab_gossip::Command::Publish {
                req: 1,
                key: "mine".into(),
                value: b"local value".to_vec(),
            }],
            _ => vec![],
        }
    }

    fn script(i: usize) -> Vec<Cmd<Self>> {
        use peerlab_gossip::Command;
        match i {
            10..=13 => vec![Command::Publish {
                req: i as u64,
                key: format!("key-{i}"),
                value: format!("value {i}").into_bytes(),
            }],
            30 => vec![Command::Delete {
                req: 30,
                key: "key-10".into(),
            }],
            _ => vec![],
        }
    }
}

/// The unstructured overlay and search (`overlay::flood::Message` on `/peerlab/flood/*`):
/// the two are neighbours, share names and search each other.
pub struct Flood;

fn flood_node(me: PeerId, seed: u64, name: &str) -> (Node<flood::Flood>, Sent<flood::Flood>) {
    let core = flood::Flood::new(me, flood::Config::default()).expect("valid flood config");
    let mut n = Node::new(core, Channel::Flood, seed);
    let mut sent = n.start();
    let other = if me == local() { remote() } else { local() };
    sent.extend(n.command(flood::Command::AddNeighbours(vec![other])));
    sent.extend(n.command(flood::Command::Share { name: name.into() }));
    (n, sent)
}

impl Core for Flood {
    type P = flood::Flood;
    const CHANNEL: Channel = Channel::Flood;

    fn local() -> (Node<Self::P>, Sent<Self::P>) {
        flood_node(local(), 1, "alpha beta.txt")
    }

    fn remote() -> (Node<Self::P>, Sent<Self::P>) {
        flood_node(remote(), 2, "gamma delta.txt")
    }

    fn local_script(i: usize) -> Vec<Cmd<Self>> {
        match i {
            10 => vec![flood::Command::Search {
                req: 1,
                terms: "gamma".into(),
                strategy: flood::Strategy::Flood,
                ttl: None,
                want_hits: 1,
            }],
            60 => vec![flood::Command::Leave],
            _ => vec![],
        }
    }

    fn script(i: usize) -> Vec<Cmd<Self>> {
        let search = |req, strategy| flood::Command::Search {
            req,
            terms: "alpha".into(),
            strategy,
            ttl: None,
            want_hits: 1,
        };
        match i {
            5 => vec![search(1, flood::Strategy::Flood)],
            20 => vec![search(2, flood::Strategy::ExpandingRing)],
            40 => vec![search(
                3,
                flood::Strategy::RandomWalk {
                    walkers: 2,
                    steps: 16,
                },
            )],
            _ => vec![],
        }
    }
}

/// Swarm transfer (`peerlab_swarm::Message` on `/peerlab/swarm/*`): each side shares a
/// small file and fetches the other's, so manifests, bitfields, requests and blocks flow
/// both ways.
pub struct Swarm;

/// The swarm core with chunks kept in memory.
type SwarmCore = peerlab_swarm::Swarm<MemoryFactory>;

/// Chunk size of the files exchanged: the smallest accepted, so a few kilobytes make
/// several chunks of one block each and the seeds stay small.
const CHUNK: u32 = peerlab_swarm::MIN_CHUNK_SIZE;

/// A small deterministic file and its manifest.
pub fn file(n: u8) -> (Manifest, Bytes) {
    let data: Vec<u8> = (0..3 * CHUNK as usize - 100)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(n))
        .collect();
    let m = Manifest::from_bytes(&format!("file-{n}.bin"), &data, CHUNK).expect("valid manifest");
    (m, Bytes::from(data))
}

fn swarm_node(me: PeerId, seed: u64) -> (Node<SwarmCore>, Sent<SwarmCore>) {
    use peerlab_swarm::Command;
    let core = SwarmCore::new(peerlab_swarm::Config::default(), MemoryFactory)
        .expect("valid swarm config");
    let mut n = Node::new(core, Channel::Swarm, seed);
    let (own, other) = if me == local() { (1, 2) } else { (2, 1) };
    let peer = if me == local() { remote() } else { local() };
    let (manifest, data) = file(own);
    let store = MemoryStore::full(&manifest, data);
    let mut sent = n.start();
    sent.extend(n.command(Command::Share {
        req: 1,
        manifest,
        store,
    }));
    sent.extend(n.command(Command::Fetch {
        req: 2,
        cid: file(other).0.content_id(),
        providers: vec![peer],
    }));
    (n, sent)
}

impl Core for Swarm {
    type P = SwarmCore;
    const CHANNEL: Channel = Channel::Swarm;

    fn local() -> (Node<Self::P>, Sent<Self::P>) {
        swarm_node(local(), 1)
    }

    fn remote() -> (Node<Self::P>, Sent<Self::P>) {
        swarm_node(remote(), 2)
    }

    fn local_script(_: usize) -> Vec<Cmd<Self>> {
        Vec::new()
    }

    fn script(_: usize) -> Vec<Cmd<Self>> {
        Vec::new()
    }
}
