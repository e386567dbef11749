//! A plain rust-libp2p peer against a node: identify + ping over TCP and QUIC, and bad
//! frames (garbage, oversized) that get the sender banned while the node keeps serving.

mod common;

use std::time::Duration;

use common::{Net, wait_for};
use peerlab_node::config::Transport;
use peerlab_node::libp2p::futures::{AsyncWriteExt, StreamExt};
use peerlab_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use peerlab_node::libp2p::{
    self, Multiaddr, StreamProtocol, Swarm, identify, noise, ping, tcp, yamux,
};
use peerlab_node::wire::{Channel, write_stream_frame};

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "peerlab_node::libp2p::swarm::derive_prelude")]
struct Plain {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "peerlab_node::libp2p::swarm::derive_prelude")]
struct Raw {
    stream: libp2p_stream::Behaviour,
}

fn plain_client() -> Swarm<Plain> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_quic()
        .with_behaviour(|key| Plain {
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(200)),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

fn raw_client() -> Swarm<Raw> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_quic()
        .with_behaviour(|_| Raw {
            stream: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Dials `addr` and waits for both a successful ping and the node's identify info.
async fn identify_and_ping(addr: Multiaddr, node: libp2p::PeerId) -> (Duration, identify::Info) {
    let mut c = plain_client();
    c.dial(addr).unwrap();
    let (mut rtt, mut info) = (None, None);
    while rtt.is_none() || info.is_none() {
        match c.select_next_some().await {
            SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event {
                peer,
                result: Ok(d),
                ..
            })) if peer == node => rtt = Some(d),
            SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received {
                peer_id,
                info: i,
                ..
            })) if peer_id == node => info = Some(i),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
    (rtt.unwrap(), info.unwrap())
}

#[test]
fn standard_libp2p_client_identifies_and_pings_over_tcp_and_quic() {
    let mut net = Net::new(Transport::Quic);
    net.start();
    let node = net.node(0);
    let id = node.peer_id();
    for proto in ["tcp", "quic-v1"] {
        let addr: Multiaddr = node
            .listen_addrs()
            .iter()
            .find(|a| a.to_string().contains(proto))
            .cloned()
            .unwrap();
        let (rtt, info) = net.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), identify_and_ping(addr, id))
                .await
                .expect("identify and ping within 20 s")
        });
        assert!(rtt < Duration::from_secs(5));
        assert_eq!(info.protocol_version, "/peerlab/id/1");
        assert!(info.agent_version.starts_with("peerlab/"));
        for ch in Channel::ALL {
            assert!(
                info.protocols.iter().any(|p| p.as_ref() == ch.protocol()),
                "{proto}: node does not announce {}",
                ch.protocol()
            );
        }
    }
}

/// Most bad frames the attacking client sends before giving up.
const MAX_ATTACK_FRAMES: usize = 60;

/// Sends `frames` (cycling) to `node`, each on its own DHT stream, length-prefixed as the
/// wire says (a client that does not limit what it sends), and waits until the node closes
/// the connection (it bans a peer after three bad frames).
async fn send_frames_until_banned(addr: Multiaddr, node: libp2p::PeerId, frames: Vec<Vec<u8>>) {
    let mut c = raw_client();
    let control = c.behaviour().stream.new_control();
    c.dial(addr).unwrap();
    let mut frames = Some(frames);
    loop {
        match c.select_next_some().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == node => {
                if let Some(frames) = frames.take() {
                    let mut control = control.clone();
                    tokio::spawn(async move {
                        // Each bad frame on a stream of its own (the node reads no further
                        // than an oversized length), cycling until the node bans us: the node
                        // holds at most a few streams of one peer per protocol and drops the
                        // rest unread, so a fixed number of frames would not be a fair test
                        // of the ban.
                        let mut open = Vec::new();
                        for f in frames.iter().cycle().take(MAX_ATTACK_FRAMES) {
                            let proto = StreamProtocol::new(Channel::Dht.protocol());
                            let Ok(mut s) = control.open_stream(node, proto).await else {
                                return;
                            };
                            let mut buf = Vec::new();
                            write_stream_frame(&mut buf, f);
                            // The node stops reading an oversized frame: errors are expected.
                            let _ = s.write_all(&buf).await;
                            let _ = s.flush().await;
                            // Kept open so the node reads it before seeing an end. Each
                            // open waits for the node's protocol negotiation, which paces
                            // the attack; once banned, opening fails and the task ends.
                            open.push(s);
                        }
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if peer_id == node => return,
            _ => {}
        }
    }
}

#[test]
fn garbage_and_oversized_frames_ban_the_sender_and_the_node_keeps_serving() {
    let mut net = Net::new(Transport::Quic);
    net.start();
    net.start();
    let c0 = net.node(0).client();
    let c1 = net.node(1).client();
    wait_for("both DHTs joined", Duration::from_secs(20), || {
        [&c0, &c1]
            .iter()
            .all(|c| c.status().map(|s| s.dht_joined).unwrap_or(false))
    });
    let node = net.node(0);
    let id = node.peer_id();
    let addr = node
        .listen_addrs()
        .iter()
        .find(|a| a.to_string().contains("quic"))
        .cloned()
        .unwrap();

    // Garbage: a right version byte with a CBOR body that is no DHT message, a wrong
    // version byte, and random bytes.
    let garbage = vec![vec![1, 0xff, 0x00, 0x13], vec![9, 1, 2, 3], vec![0xde; 100]];
    net.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            send_frames_until_banned(addr.clone(), id, garbage),
        )
        .await
        .expect("the node closes the connection of a peer sending garbage within 20 s")
    });
    let st = c0.status().unwrap();
    assert!(st.bad_frames >= 3, "{st:?}");
    assert_eq!(st.banned_peers, 1);

    // Oversized: frames above the DHT channel's 256 KiB limit from another peer.
    let big = vec![vec![1u8; peerlab_node::wire::SMALL_FRAME_LIMIT + 1]; 3];
    net.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            send_frames_until_banned(addr, id, big),
        )
        .await
        .expect("the node bans a peer sending oversized frames within 20 s")
    });
    wait_for("oversized frames counted", Duration::from_secs(10), || {
        c0.status().map(|s| s.bad_frames >= 6).unwrap_or(false)
    });
    let m = c0.metrics().unwrap();
    assert!(m.contains("peerlab_bad_frames_total"), "{m}");
    assert!(m.contains("peerlab_peers_banned_total"), "{m}");

    // The node keeps serving its honest peer.
    c1.kv_put("after-attack", "still here").unwrap();
    assert_eq!(
        c0.kv_get("after-attack").unwrap().value.as_deref(),
        Some("still here")
    );
    assert_eq!(
        c0.peers().unwrap().len(),
        1,
        "only the honest peer stays connected"
    );
}
