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
    // The DHT's failure-detector counters are published at the node's rejoin tick (2 s).
    wait_for(
        "the DHT counters are published",
        Duration::from_secs(6),
        || {
            clients[0].metrics().is_ok_and(|m| {
                [
                    "peerlab_dht_request_timeouts_total",
                    "peerlab_dht_evictions_total",
                    "peerlab_dht_late_replies_total",
                ]
                .iter()
                .all(|name| m.contains(name))
            })
        },
    );
}

#[test]
fn the_metrics_endpoint_serves_only_metrics_and_without_a_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = peerlab_node::config::Config {
        metrics: Some("127.0.0.1:0".into()),
        ..peerlab_node::config::Config::local(Transport::Tcp)
    };
    let node = rt
        .block_on(peerlab_node::spawn(peerlab_node::NodeOptions::new(
            dir.path(),
            cfg,
        )))
        .unwrap();
    let addr = node.metrics_addr().expect("a metrics address");
    let mut r = ureq::get(format!("http://{addr}/metrics")).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("# TYPE peerlab_bytes_in_total counter"),
        "{text}"
    );
    // Nothing else is served there, the control API least of all.
    match ureq::get(format!("http://{addr}/status")).call() {
        Err(ureq::Error::StatusCode(404)) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    // The control API still wants its token.
    let bad = Client::new(&node.api_addr().to_string(), "wrong");
    assert!(matches!(
        bad.status(),
        Err(ClientError::Api { status: 401, .. })
    ));
    rt.block_on(node.shutdown());
}
