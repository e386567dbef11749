//! The connection manager against real nodes: a burst of contacts does not leave a node
//! with more connections than its bound, and trimming keeps the peers its protocols need.
//!
//! Twelve nodes form an overlay in one runtime; node 0 runs with a bound of 14 connected
//! peers, above the 11 members it needs (with 12 peers the successor lists span the whole
//! ring). Then 24 plain rust-libp2p peers dial node 0 at once and keep their side of the
//! connections open (an hour's idle timeout), as peers that probed or looked something up
//! through the node and went quiet. Node 0 must trim back to its bound once they have been
//! quiet for `EVICT_QUIET` (30 s) — without the manager the connections would stay until
//! the node's idle timeout (60 s) — and keep every member it was connected to.

// Tests measure real deadlines with the wall clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Net, counter, wait_for};
use peerlab_node::NodeOptions;
use peerlab_node::client::Client;
use peerlab_node::config::Transport;
use peerlab_node::libp2p::futures::StreamExt;
use peerlab_node::libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use peerlab_node::libp2p::{self, Multiaddr, Swarm};
use tokio::sync::mpsc;

/// Members of the overlay (node 0 included).
const MEMBERS: usize = 12;
/// Node 0's bound on connected peers.
const BOUND: u32 = 14;
/// Plain peers that dial node 0 together.
const BURST: usize = 24;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "peerlab_node::libp2p::swarm::derive_prelude")]
struct Raw {
    stream: libp2p_stream::Behaviour,
}

/// A plain libp2p peer (QUIC) that dials `addr` and holds the connection open; reports
/// when it is up.
fn contact(addr: Multiaddr, up: mpsc::UnboundedSender<()>) {
    let mut swarm: Swarm<Raw> = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| Raw {
            stream: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.dial(addr).unwrap();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                let _ = up.send(());
            }
        }
    });
}

fn connected_peers(c: &Client) -> BTreeSet<String> {
    c.peers().unwrap().into_iter().map(|p| p.peer_id).collect()
}

#[test]
fn a_burst_of_contacts_is_trimmed_back_to_the_bound_and_needed_peers_stay() {
    let mut net = Net::new(Transport::Quic);
    // Node 0, with the bound under test.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = net.config(1);
    cfg.max_peers = BOUND;
    let first = net
        .rt
        .block_on(peerlab_node::spawn(NodeOptions::new(dir.path(), cfg)))
        .expect("node starts");
    net.nodes.push(Some(first));
    net.dirs.push(dir);
    for _ in 1..MEMBERS {
        net.start();
    }
    let c0 = net.node(0).client();
    let members: BTreeSet<String> = net
        .alive()
        .skip(1)
        .map(|(_, n)| n.peer_id().to_string())
        .collect();
    wait_for(
        "node 0 joined and sees every member alive",
        Duration::from_secs(30),
        || {
            c0.status()
                .is_ok_and(|s| s.dht_joined && s.members_alive == MEMBERS - 1)
        },
    );
    let before: BTreeSet<String> = connected_peers(&c0)
        .intersection(&members)
        .cloned()
        .collect();
    assert!(
        before.len() as u32 <= BOUND,
        "the members alone fit the bound"
    );

    let addr = net
        .bootstrap_addr(net.node(0))
        .parse::<Multiaddr>()
        .unwrap();
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    {
        let _guard = net.rt.enter();
        for _ in 0..BURST {
            contact(addr.clone(), up_tx.clone());
        }
    }
    net.rt.block_on(async {
        for _ in 0..BURST {
            tokio::time::timeout(Duration::from_secs(10), up_rx.recv())
                .await
                .expect("every contact connects")
                .expect("contact task alive");
        }
    });
    // A contact's side of the handshake can finish before node 0 has counted the
    // connection: the trim below is only measured once node 0 is over its bound.
    wait_for(
        "node 0 counts the contacts beyond its bound",
        Duration::from_secs(10),
        || c0.status().is_ok_and(|s| s.connected_peers as u32 > BOUND),
    );
    // EVICT_QUIET (30 s) and a housekeeping period (1 s) after the contacts went quiet;
    // node 0's idle timeout (60 s) is beyond this deadline.
    wait_for(
        "node 0 trims back to its bound",
        Duration::from_secs(36),
        || c0.status().is_ok_and(|s| s.connected_peers as u32 <= BOUND),
    );
    let after = connected_peers(&c0);
    let lost: Vec<&String> = before.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "needed members were disconnected: {lost:?}"
    );
    // At least the contacts beyond the room the members left were closed, and counted.
    let room = BOUND as usize - before.len();
    let metrics = c0.metrics().unwrap();
    assert!(
        counter(&metrics, "peerlab_connections_trimmed_total", "") >= (BURST - room) as f64,
        "{metrics}"
    );
    let st = c0.status().unwrap();
    assert_eq!(st.members_alive, MEMBERS - 1, "no member suspected");
    assert!(st.dht_joined);
}
