//! SWIM's probes as bare UDP datagrams between real nodes (node/src/driver/probe.rs).
//!
//! - Honest nodes probe each other by datagram only: every node receives probe datagrams,
//!   refuses none, and no probe ever needs a connection (`peerlab_dials_total` by
//!   `gossip_ping` stays 0).
//! - A node with `probe_datagrams = false` still takes part: it probes and is probed on
//!   connections, and every member stays alive.
//! - Forged datagrams from a plain UDP socket: garbage, a datagram for another identity,
//!   one from an unknown key, and an ack that does not echo a request's nonce are refused
//!   and counted; a ping that claims to come from member B is answered at B's signed
//!   probe address — B refuses the ack it never asked for — and never at the forger's
//!   socket; and nothing is charged to B.

// Tests measure real deadlines with the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Net, counter, wait_for};
use peerlab_node::client::Client;
use peerlab_node::config::Transport;
use peerlab_node::libp2p::Multiaddr;
use peerlab_node::libp2p::multiaddr::Protocol;
use peerlab_node::wire::{Channel, Datagram};
use peerlab_overlay::PeerId;

const DATAGRAMS: &str = "peerlab_probe_datagrams_total";

/// Waits until every running node sees all the others alive and its DHT joined.
fn converge(net: &Net, within: Duration) {
    let n = net.alive().count();
    let clients: Vec<Client> = net.alive().map(|(_, h)| h.client()).collect();
    wait_for("every node sees every member alive", within, || {
        clients.iter().all(|c| {
            c.status()
                .is_ok_and(|s| s.dht_joined && s.members_alive == n - 1)
        })
    });
}

/// The probe socket address a node's status names.
fn probe_socket(c: &Client) -> SocketAddr {
    let a: Multiaddr = c
        .status()
        .unwrap()
        .probe_addr
        .expect("a probe address")
        .parse()
        .unwrap();
    let mut it = a.iter();
    match (it.next(), it.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Udp(port))) => SocketAddr::from((ip, port)),
        other => panic!("not a probe address: {other:?}"),
    }
}

fn overlay_id(n: &peerlab_node::NodeHandle) -> PeerId {
    PeerId::from_libp2p_bytes(&n.peer_id().to_bytes()).expect("an Ed25519 node")
}

/// Refusals counted by a node: every outcome but `sent` and `received`.
fn refused(metrics: &str) -> f64 {
    counter(metrics, DATAGRAMS, "")
        - counter(metrics, DATAGRAMS, "outcome=\"sent\"")
        - counter(metrics, DATAGRAMS, "outcome=\"received\"")
}

#[test]
fn honest_nodes_probe_each_other_by_datagram_only() {
    let mut net = Net::new(Transport::Quic);
    for _ in 0..5 {
        net.start();
    }
    converge(&net, Duration::from_secs(20));
    let clients: Vec<Client> = net.alive().map(|(_, h)| h.client()).collect();
    // Counted from here: while the group forms, a ping can reach a node that has not yet
    // heard of its sender (refused as `unknown_peer`, the prober asks others).
    let dials = |m: &str| counter(m, "peerlab_dials_total", "kind=\"gossip_ping\"");
    let received = |m: &str| counter(m, DATAGRAMS, "outcome=\"received\"");
    let base: Vec<(f64, f64, f64)> = clients
        .iter()
        .map(|c| {
            let m = c.metrics().unwrap();
            (refused(&m), dials(&m), received(&m))
        })
        .collect();
    // A probe period is 1 s: within a few, each node has had pings and acks by datagram.
    wait_for(
        "every node receives probe datagrams",
        Duration::from_secs(8),
        || {
            clients
                .iter()
                .zip(&base)
                .all(|(c, b)| c.metrics().is_ok_and(|m| received(&m) >= b.2 + 4.0))
        },
    );
    for (i, (c, b)) in clients.iter().zip(&base).enumerate() {
        let m = c.metrics().unwrap();
        assert_eq!(refused(&m), b.0, "node {i} refused honest datagrams:\n{m}");
        assert_eq!(dials(&m), b.1, "node {i} dialled a peer to probe it");
    }
}

#[test]
fn a_node_without_datagrams_is_probed_on_connections() {
    let mut net = Net::new(Transport::Quic);
    for _ in 0..3 {
        net.start();
    }
    // The fourth node runs without a probe socket.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = net.config(4);
    cfg.probe_datagrams = false;
    cfg.bootstrap = vec![net.bootstrap_addr(net.node(0))];
    let off = net
        .rt
        .block_on(peerlab_node::spawn(peerlab_node::NodeOptions::new(
            dir.path(),
            cfg,
        )))
        .expect("node starts");
    net.nodes.push(Some(off));
    net.dirs.push(dir);
    converge(&net, Duration::from_secs(20));
    let c_off = net.node(3).client();
    assert_eq!(c_off.status().unwrap().probe_addr, None);
    // Acks reach the node without datagrams, and its own acks reach the others.
    wait_for(
        "the node without datagrams has its probes answered",
        Duration::from_secs(10),
        || {
            c_off.metrics().is_ok_and(|m| {
                counter(&m, "peerlab_gossip_messages_total", "kind=\"gossip_ack\"") >= 5.0
            })
        },
    );
    converge(&net, Duration::from_secs(1));
    let m = c_off.metrics().unwrap();
    assert_eq!(counter(&m, DATAGRAMS, ""), 0.0, "{m}");
}

#[test]
fn forged_datagrams_are_refused_and_answers_go_only_to_signed_addresses() {
    let mut net = Net::new(Transport::Quic);
    for _ in 0..3 {
        net.start();
    }
    converge(&net, Duration::from_secs(20));
    let (a, b) = (net.node(0).client(), net.node(1).client());
    let (a_id, b_id) = (overlay_id(net.node(0)), overlay_id(net.node(1)));
    let a_at = probe_socket(&a);
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    forger.set_nonblocking(true).unwrap();
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&a_id.public_key()[..8]);
    let ping =
        peerlab_overlay::codec::encode(&peerlab_gossip::Message::Ping { seq: 1, members: 1 })
            .unwrap();
    let ack = peerlab_overlay::codec::encode(&peerlab_gossip::Message::Ack { seq: 1, members: 1 })
        .unwrap();
    // A request's token is its nonce, an answer's the nonce it echoes.
    let datagram = |from: PeerId, to_tag, token, body: &[u8]| {
        let mut from_tag = [0u8; 8];
        from_tag.copy_from_slice(&from.public_key()[..8]);
        Datagram {
            from_tag,
            to_tag,
            token,
            channel: Channel::Gossip,
            body,
        }
        .to_bytes()
        .unwrap()
    };
    let send = |bytes: &[u8]| {
        forger.send_to(bytes, a_at).unwrap();
    };
    let a_count = |outcome: &str| {
        let m = a.metrics().unwrap();
        counter(&m, DATAGRAMS, &format!("outcome=\"{outcome}\""))
    };
    let base = |o: &str| a_count(o);
    let before: Vec<f64> = ["short", "version", "not_for_me", "unknown_peer", "nonce"]
        .iter()
        .map(|o| base(o))
        .collect();

    send(&[1, 2, 3]);
    let mut wrong_version = datagram(b_id, tag, 5, &ping);
    wrong_version[0] = 0xee;
    send(&wrong_version);
    send(&datagram(b_id, [0xab; 8], 5, &ping));
    send(&datagram(PeerId::synthetic(77), tag, 5, &ping));
    send(&datagram(b_id, tag, 0x1234_5678, &ack));
    for (o, was) in ["short", "version", "not_for_me", "unknown_peer", "nonce"]
        .iter()
        .zip(&before)
    {
        wait_for(
            &format!("node A refuses the forged datagram ({o})"),
            Duration::from_secs(5),
            || a_count(o) > *was,
        );
    }

    // A ping in B's name: A answers at B's signed address, where B refuses an ack that
    // echoes no request of its own.
    let b_nonce_before = counter(&b.metrics().unwrap(), DATAGRAMS, "outcome=\"nonce\"");
    send(&datagram(b_id, tag, 0x0bad_cafe, &ping));
    wait_for(
        "B receives A's answer to the ping forged in its name",
        Duration::from_secs(5),
        || {
            b.metrics()
                .is_ok_and(|m| counter(&m, DATAGRAMS, "outcome=\"nonce\"") > b_nonce_before)
        },
    );
    let mut buf = [0u8; 2048];
    assert!(
        forger.recv_from(&mut buf).is_err(),
        "the forger's socket got an answer"
    );
    // Neither A (for the forgeries in B's name) nor B (for A's unasked-for ack) charged
    // the other.
    let (a_peer, b_peer) = (
        net.node(0).peer_id().to_string(),
        net.node(1).peer_id().to_string(),
    );
    for (who, c, other) in [("A", &a, &b_peer), ("B", &b, &a_peer)] {
        let strikes: u32 = c
            .peers()
            .unwrap()
            .iter()
            .filter(|p| p.peer_id == *other)
            .map(|p| p.strikes)
            .sum();
        assert_eq!(strikes, 0, "{who} charged {other} for forged datagrams");
        assert_eq!(c.status().unwrap().banned_peers, 0, "{who} banned a peer");
    }
    converge(&net, Duration::from_secs(1));
}
