//! Small real-network tests: connection, status, auth, DHT, gossip.

mod common;

use std::time::Duration;

use common::{Net, wait_for};
use peerlab_node::client::{Client, ClientError};
use peerlab_node::config::Transport;

#[test]
fn three_nodes_connect_store_and_gossip() {
    let mut net = Net::new(Transport::Quic);
    for _ in 0..3 {
        net.start();
    }
    let clients: Vec<Client> = net.alive().map(|(_, n)| n.client()).collect();
    wait_for("every DHT joined", Duration::from_secs(20), || {
        clients
            .iter()
            .all(|c| c.status().map(|s| s.dht_joined).unwrap_or(false))
    });
    let st = clients[0].status().unwrap();
    assert_eq!(st.peer_id, net.node(0).peer_id().to_string());

    let bad = Client::new(&net.node(0).api_addr().to_string(), "wrong");
    match bad.status() {
        Err(ClientError::Api { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let v: serde_json::Value = clients[1]
        .put("/kv/alice", &serde_json::json!({"value": "42"}))
        .unwrap();
    assert!(v["owner"].is_string(), "{v}");
    for c in &clients {
        let got: serde_json::Value = c.get("/kv/alice").unwrap();
        assert_eq!(got["value"], "42", "{got}");
    }
    let _: serde_json::Value = clients[2]
        .post(
            "/gossip",
            &serde_json::json!({"key": "motd", "value": "hi"}),
        )
        .unwrap();
    wait_for("gossip reaches all", Duration::from_secs(20), || {
        clients.iter().all(|c| {
            c.get::<serde_json::Value>("/gossip/motd")
                .map(|v| v["value"] == "hi")
                .unwrap_or(false)
        })
    });
    let metrics = clients[0].metrics().unwrap();
    assert!(metrics.contains("peerlab_connected_peers"), "{metrics}");
}
