//! Simulator throughput: events processed per second on one core.
//!
//! A population of relay cores passes a token along random links; every delivery is one
//! event and causes one send, so the figure is the cost of the event loop itself (heap,
//! frame-length accounting, latency hashing, outbox), not of any protocol.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use peerlab_overlay::{Cx, Instant, Message, PeerId, Protocol};
use peerlab_sim::{Latency, Sim, SimConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    hops: u32,
    guid: [u8; 16],
}

impl Message for Token {
    fn kind(&self) -> &'static str {
        "token"
    }
}

struct Relay {
    peers: std::sync::Arc<Vec<PeerId>>,
}

impl Protocol for Relay {
    type Message = Token;
    type Timer = ();
    type Command = ();
    type Event = ();

    fn handle_start(&mut self, _cx: &mut Cx<'_, Self>) {}
    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, _from: PeerId, mut msg: Token) {
        msg.hops += 1;
        let to = self.peers[cx.rng().index(self.peers.len())];
        cx.send(to, msg);
    }
    fn handle_timer(&mut self, _cx: &mut Cx<'_, Self>, _t: ()) {}
    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, _c: ()) {
        let to = self.peers[cx.rng().index(self.peers.len())];
        cx.send(
            to,
            Token {
                hops: 0,
                guid: [7; 16],
            },
        );
    }
    fn handle_peer_down(&mut self, _cx: &mut Cx<'_, Self>, _p: PeerId) {}
}

/// Builds `nodes` relays with `tokens` tokens in flight.
fn setup(nodes: u64, tokens: u64) -> Sim<Relay> {
    let peers: std::sync::Arc<Vec<PeerId>> =
        std::sync::Arc::new((0..nodes).map(PeerId::synthetic).collect());
    let cfg = SimConfig {
        seed: 1,
        latency: Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..Default::default()
    };
    let mut sim = Sim::new(cfg);
    for &p in peers.iter() {
        sim.add_node(
            p,
            Relay {
                peers: peers.clone(),
            },
        );
    }
    for i in 0..tokens {
        sim.command(peers[(i % nodes) as usize], ());
    }
    sim
}

fn events_per_second(c: &mut Criterion) {
    const EVENTS: u64 = 200_000;
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    for nodes in [1_000u64, 100_000] {
        g.bench_function(format!("relay_{nodes}_nodes"), |b| {
            b.iter_batched(
                || setup(nodes, 10_000),
                |mut sim| {
                    let start = sim.events_processed();
                    while sim.events_processed() - start < EVENTS && sim.step() {}
                    assert!(sim.now() > Instant::ZERO);
                    sim
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, events_per_second);
criterion_main!(benches);
