//! Small real-network tests: connection, status, auth, flooding search.

mod common;

use std::time::Duration;

use common::{Net, wait_for};
use peerlab_node::client::{Client, ClientError};
use peerlab_node::config::Transport;

#[test]
fn two_nodes_connect_and_api_requires_token() {
    let mut net = Net::new(Transport::Quic);
    net.start();
    net.start();
    let c0 = net.node(0).client();
    let c1 = net.node(1).client();
    wait_for("node 1 connected to node 0", Duration::from_secs(10), || {
        c1.peers().map(|p| !p.is_empty()).unwrap_or(false)
    });
    let st = c0.status().unwrap();
    assert_eq!(st.peer_id, net.node(0).peer_id().to_string());
    assert!(st.listen_addrs.iter().any(|a| a.contains("quic-v1")));

    let bad = Client::new(&net.node(0).api_addr().to_string(), "wrong");
    match bad.status() {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let metrics = c0.metrics().unwrap();
    assert!(metrics.contains("peerlab_connected_peers"), "{metrics}");
}
