//! Regression test for stalled swarm fetches between real nodes.
//!
//! A driver that gives every 16 KiB block its own substream lets a seeder answering a deep
//! pipeline open substreams faster than they finish, past the transports' stream limits,
//! and the transfer stops for minutes. Here four nodes over TCP + Yamux (the transport
//! whose stream limit is reached first) fetch a 6 MiB file (384 blocks, well over the LAN
//! pipeline per sharer) from three sharers within a bounded time, byte-identical.

mod common;

use std::time::Duration;

use common::{Net, wait_for};
use peerlab_node::config::Transport;

#[test]
fn many_blocks_from_three_sharers_over_tcp_finish_in_bounded_time() {
    let mut net = Net::new(Transport::Tcp);
    let ids: Vec<usize> = (0..4).map(|_| net.start()).collect();
    wait_for("every DHT joined", Duration::from_secs(60), || {
        ids.iter().all(|&i| {
            net.node(i)
                .client()
                .status()
                .map(|s| s.dht_joined)
                .unwrap_or(false)
        })
    });
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| i.wrapping_mul(2654435761).to_le_bytes()[2])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cid = String::new();
    for &s in &ids[..3] {
        let path = dir.path().join(format!("s{s}.bin"));
        std::fs::write(&path, &data).unwrap();
        cid = net.node(s).client().share(&path).unwrap().cid;
    }
    let fc = net.node(ids[3]).client();
    let out = dir.path().join("fetched.bin");
    fc.fetch(&cid, Some(&out)).unwrap();
    wait_for("fetch completes", Duration::from_secs(90), || {
        let p = fc.fetch_progress(&cid).unwrap();
        assert!(p.error.is_none(), "{p:?}");
        p.done
    });
    assert!(std::fs::read(&out).unwrap() == data, "fetched file differs");
}
