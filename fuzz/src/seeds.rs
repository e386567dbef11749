//! The seed corpus: small valid inputs of every kind, generated deterministically.
//!
//! Protocol seeds come from real conversations ([`crate::cores::record`]): the frames a
//! real core in the remote's place sent to the node under test, as one stream, and every
//! first message of each kind as a stream of its own. Nothing here names a message's
//! fields, so new variants and signed records enter the corpus by regenerating it:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! which rewrites `fuzz/corpus/<target>/seed-*` (other files there, such as inputs kept
//! from a crash, are left alone).

use std::collections::BTreeSet;

use peerlab_overlay::{Message as _, codec};
use peerlab_swarm::{Bitfield, Manifest};

use crate::cores::{self, Core, Msg};
use crate::harness::{self, stream};
use crate::targets::STREAM_HEADER;
use crate::wire::Channel;

/// Steps recorded per conversation (100 ms each): enough for the DHT join, the remote's
/// writes and reads, gossip's join and publications, searches, and a whole small transfer.
pub const STEPS: usize = 80;

/// One seed: its file name (without the `seed-` prefix) and its bytes.
pub type Seed = (String, Vec<u8>);

/// The seeds of target `name`, in a fixed order.
pub fn seeds(name: &str) -> Vec<Seed> {
    match name {
        "codec" => codec_seeds(),
        "stream_frame" => stream_seeds(),
        "datagram" => datagram_seeds(),
        "dht" => core_seeds::<cores::Dht>(),
        "gossip" => core_seeds::<cores::Gossip>(),
        "flood" => core_seeds::<cores::Flood>(),
        "swarm" => core_seeds::<cores::Swarm>(),
        "manifest" => manifest_seeds(),
        "bitfield" => bitfield_seeds(),
        "signature" => signature_seeds(),
        _ => panic!("unknown fuzz target {name}"),
    }
}

/// The recorded conversation as one stream, then the first frame of each message kind.
fn core_seeds<C: Core>() -> Vec<Seed> {
    let frames = cores::record::<C>(STEPS);
    let mut out = vec![("conversation".to_string(), stream(&frames))];
    for (kind, frame) in first_of_each_kind::<C>(&frames) {
        out.push((kind.to_string(), stream(&[frame])));
    }
    out
}

fn first_of_each_kind<C: Core>(frames: &[Vec<u8>]) -> Vec<(&'static str, Vec<u8>)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for frame in frames {
        if let Some(msg) = harness::decode::<Msg<C>>(frame, C::CHANNEL)
            && seen.insert(msg.kind())
        {
            out.push((msg.kind(), frame.clone()));
        }
    }
    out
}

/// One frame of each kind of every protocol, behind the byte that picks the node's limit
/// of its channel (0: the small limit, 1: the transfer limit; `targets::codec`).
fn codec_seeds() -> Vec<Seed> {
    fn frames_of<C: Core>(pick: u8, out: &mut Vec<Seed>) {
        let frames = cores::record::<C>(STEPS);
        for (kind, frame) in first_of_each_kind::<C>(&frames) {
            let mut seed = vec![pick];
            seed.extend_from_slice(&frame);
            out.push((kind.to_string(), seed));
        }
    }
    let mut out = Vec::new();
    frames_of::<cores::Dht>(0, &mut out);
    frames_of::<cores::Gossip>(0, &mut out);
    frames_of::<cores::Flood>(0, &mut out);
    frames_of::<cores::Swarm>(1, &mut out);
    out
}

/// Each protocol's conversation as the stream it is, read in pieces of a few sizes.
fn stream_seeds() -> Vec<Seed> {
    fn conversation<C: Core>(sizes: [u8; 4], out: &mut Vec<Seed>) {
        let ch = C::CHANNEL;
        let mut seed = vec![ch.index() as u8];
        seed.extend_from_slice(&sizes);
        seed.extend_from_slice(&stream(&cores::record::<C>(STEPS)));
        out.push((format!("{}-conversation", ch.name()), seed));
    }
    let mut out = Vec::new();
    conversation::<cores::Dht>([255, 3, 0, 64], &mut out);
    conversation::<cores::Gossip>([1, 2, 255, 0], &mut out);
    conversation::<cores::Flood>([4, 255, 255, 7], &mut out);
    conversation::<cores::Swarm>([255, 255, 0, 255], &mut out);
    // A length prefix over the limit ends the stream.
    let mut over = vec![Channel::Dht.index() as u8, 255, 255, 255, 255];
    let len = Channel::Dht.max_frame() as u32 + 1;
    over.extend_from_slice(&len.to_be_bytes());
    out.push(("oversized".into(), over));
    debug_assert!(out.iter().all(|(_, s)| s.len() >= STREAM_HEADER));
    out
}

/// Probe datagrams as nodes send them: a ping, an indirect ping and their answers.
fn datagram_seeds() -> Vec<Seed> {
    use peerlab_gossip::Message as G;
    let (a, b) = (
        peerlab_overlay::PeerId::synthetic(1),
        peerlab_overlay::PeerId::synthetic(2),
    );
    let tag = |p: &peerlab_overlay::PeerId| {
        let mut t = [0u8; 8];
        t.copy_from_slice(&p.public_key()[..8]);
        t
    };
    // A request's token is its nonce, an answer's the nonce it echoes.
    let one = |name: &str, msg: G, token: u64| -> Seed {
        let body = codec::encode(&msg).expect("encodes");
        let d = crate::wire::Datagram {
            from_tag: tag(&a),
            to_tag: tag(&b),
            token,
            channel: Channel::Gossip,
            body: &body,
        };
        (name.into(), d.to_bytes().expect("fits"))
    };
    vec![
        one(
            "ping",
            G::Ping { seq: 7, members: 3 },
            0x1234_5678_9abc_def0,
        ),
        one("ack", G::Ack { seq: 7, members: 3 }, 0x1234_5678_9abc_def0),
        one("ping-req", G::PingReq { seq: 8, target: b }, 42),
        one("indirect-ack", G::IndirectAck { seq: 8, target: b }, 42),
        one("nack", G::Nack { seq: 8 }, 42),
    ]
}

/// Manifests of files of a few shapes (empty, one partial chunk, several chunks of one
/// and of several blocks), as canonical frames.
fn manifest_seeds() -> Vec<Seed> {
    let file = |len: usize| -> Vec<u8> { (0..len).map(|i| (i % 251) as u8).collect() };
    let shapes: [(&str, usize, u32); 4] = [
        ("empty", 0, 1024),
        ("one-partial-chunk", 700, 1024),
        ("three-chunks", cores::file(1).1.len(), 1024),
        ("chunks-of-four-blocks", 150_000, 64 * 1024),
    ];
    shapes
        .iter()
        .map(|&(name, len, chunk)| {
            let m = Manifest::from_bytes(&format!("{name}.bin"), &file(len), chunk)
                .expect("valid manifest");
            (name.to_string(), m.canonical_bytes())
        })
        .collect()
}

/// Bitfields: empty, full, partial with spare bits, and one byte-aligned.
fn bitfield_seeds() -> Vec<Seed> {
    let mut partial = Bitfield::new(21);
    for i in [0, 3, 8, 20] {
        partial.set(i);
    }
    let cases = [
        ("none", Bitfield::new(0)),
        ("full-13", Bitfield::full(13)),
        ("partial-21", partial),
        ("empty-64", Bitfield::new(64)),
    ];
    cases
        .into_iter()
        .map(|(name, b)| {
            let frame = codec::encode(&b).expect("a bitfield encodes");
            (name.to_string(), frame)
        })
        .collect()
}

/// Real signatures: of a DHT-style record and of an empty payload, each with its key, and
/// the libp2p form of a key in front.
fn signature_seeds() -> Vec<Seed> {
    let seed = |key: &peerlab_overlay::Keypair, domain: &str, payload: &[u8]| {
        let mut s = key.peer_id().public_key().to_vec();
        s.extend_from_slice(&key.sign(domain, payload).0);
        s.push(domain.len() as u8);
        s.extend_from_slice(domain.as_bytes());
        s.extend_from_slice(payload);
        s
    };
    let a = peerlab_overlay::Keypair::synthetic(7);
    let b = peerlab_overlay::Keypair::synthetic(8);
    let mut libp2p = b.peer_id().to_libp2p_bytes().to_vec();
    libp2p.extend_from_slice(&[0; 64]);
    libp2p.push(0);
    vec![
        (
            "record".into(),
            seed(&a, "peerlab/dht/record/1", b"key\0value\0version"),
        ),
        ("empty".into(), seed(&b, "peerlab/gossip/member/1", b"")),
        ("libp2p-form".into(), libp2p),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same generator, same bytes: the corpus in the repository can be regenerated.
    #[test]
    fn seeds_are_deterministic() {
        for name in crate::TARGETS {
            assert_eq!(seeds(name), seeds(name), "{name}");
        }
    }

    /// Every seed is a valid input that reaches past decoding: protocol seeds decode to at
    /// least one message at the channel's limit, and every seed runs without a panic.
    #[test]
    fn seeds_decode_and_run() {
        for name in crate::TARGETS {
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "{name} has no seeds");
            for (seed, bytes) in &seeds {
                crate::run(name, bytes);
                if let Some(ch) = Channel::ALL.iter().find(|c| c.name() == name) {
                    let frames = harness::frames(bytes, *ch);
                    assert!(!frames.is_empty(), "{name}/{seed} has no frame");
                }
            }
        }
    }

    /// The conversations are conversations: the remote sent several kinds of message.
    #[test]
    fn conversations_cover_several_kinds() {
        fn kinds<C: Core>() -> usize {
            first_of_each_kind::<C>(&cores::record::<C>(STEPS)).len()
        }
        for (name, n) in [
            ("dht", kinds::<cores::Dht>()),
            ("gossip", kinds::<cores::Gossip>()),
            ("flood", kinds::<cores::Flood>()),
            ("swarm", kinds::<cores::Swarm>()),
        ] {
            assert!(n >= 3, "{name}: only {n} kinds of message recorded");
        }
    }

    /// Every input kept in `fuzz/corpus/` (seeds and regression inputs) runs without a
    /// panic outside the fuzzer too.
    #[test]
    fn corpus_runs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for name in crate::TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in dir {
                let path = entry.unwrap().path();
                crate::run(name, &std::fs::read(&path).unwrap());
            }
        }
    }
}
