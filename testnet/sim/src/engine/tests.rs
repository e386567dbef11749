//! Tests of the simulator itself, with a tiny probe protocol.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::Latency;
use peerlab_overlay::Cx;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Message for Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Ping(_) => "ping",
            Msg::Pong(_) => "pong",
            Msg::Blob(_) => "blob",
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Ping(PeerId, u64),
    Blob(PeerId, usize),
    Tick(Duration),
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Got(PeerId, u64),
    Blob(PeerId, usize),
    Tick,
    Down(PeerId),
}

#[derive(Default)]
struct Probe {
    random: Vec<u64>,
}

impl Protocol for Probe {
    type Message = Msg;
    type Timer = Duration;
    type Command = Cmd;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        let r = cx.rng().next_u64();
        self.random.push(r);
    }
    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Msg) {
        match msg {
            Msg::Ping(n) => cx.send(from, Msg::Pong(n)),
            Msg::Pong(n) => cx.emit(Event::Got(from, n)),
            Msg::Blob(b) => cx.emit(Event::Blob(from, b.len())),
        }
    }
    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, every: Duration) {
        cx.emit(Event::Tick);
        cx.set_timer(every, every);
    }
    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Cmd) {
        match cmd {
            Cmd::Ping(to, n) => cx.send(to, Msg::Ping(n)),
            Cmd::Blob(to, len) => cx.send(to, Msg::Blob(vec![0; len])),
            Cmd::Tick(every) => cx.set_timer(every, every),
        }
    }
    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        cx.emit(Event::Down(peer));
    }
}

fn p(n: u64) -> PeerId {
    PeerId::synthetic(n)
}

fn sim(config: SimConfig, nodes: u64) -> Sim<Probe> {
    let mut s = Sim::new(config);
    for n in 0..nodes {
        assert!(s.add_node(p(n), Probe::default()));
    }
    s
}

#[test]
fn round_trip_takes_two_latencies() {
    let mut s = sim(
        SimConfig {
            latency: Latency::Fixed(Duration::from_millis(30)),
            ..Default::default()
        },
        2,
    );
    assert!(s.command(p(0), Cmd::Ping(p(1), 9)));
    s.run_until_idle(Instant(10_000_000));
    let ev = s.take_events();
    assert_eq!(ev, vec![(Instant(60_000), p(0), Event::Got(p(1), 9))]);
    assert_eq!(s.stats().kinds["ping"].delivered, 1);
    assert_eq!(s.stats().total.sent, 2);
    assert_eq!(s.node_stats(&p(1)).unwrap().received, 1);
    assert!(
        !s.add_node(p(1), Probe::default()),
        "duplicate live id refused"
    );
}

#[test]
fn upload_queue_is_fifo_and_charges_real_frame_size() {
    let cfg = SimConfig {
        latency: Latency::Fixed(Duration::ZERO),
        upload_bps: Some(1_000_000),
        ..Default::default()
    };
    let mut s = sim(cfg, 2);
    s.command(p(0), Cmd::Blob(p(1), 10_000));
    s.command(p(0), Cmd::Blob(p(1), 10_000));
    s.run_until_idle(Instant(10_000_000));
    let ev = s.take_events();
    let frame = Msg::Blob(vec![0; 10_000]).wire_len() as u64; // > 10_000: header + CBOR
    assert!(frame > 10_000);
    // One megabyte per second: a frame of `frame` bytes takes `frame` µs.
    assert_eq!(ev[0].0, Instant(frame));
    assert_eq!(
        ev[1].0,
        Instant(2 * frame),
        "second message waits behind the first"
    );
    assert_eq!(s.stats().total.sent_bytes, 2 * frame);
}

#[test]
fn download_queue_serialises_concurrent_senders() {
    let cfg = SimConfig {
        latency: Latency::Fixed(Duration::from_millis(1)),
        ..Default::default()
    };
    let mut s = sim(cfg, 3);
    s.set_bandwidth(p(2), None, Some(1_000_000));
    s.command(p(0), Cmd::Blob(p(2), 5_000));
    s.command(p(1), Cmd::Blob(p(2), 5_000));
    s.run_until_idle(Instant(10_000_000));
    let ev = s.take_events();
    let frame = Msg::Blob(vec![0; 5_000]).wire_len() as u64;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].0, Instant(1_000 + frame));
    assert_eq!(ev[1].0, Instant(1_000 + 2 * frame));
}

#[test]
fn loss_drops_about_the_configured_fraction() {
    let mut s = sim(
        SimConfig {
            loss: 0.3,
            seed: 4,
            ..Default::default()
        },
        2,
    );
    for i in 0..2000 {
        s.command(p(0), Cmd::Ping(p(1), i));
    }
    s.run_until_idle(Instant(10_000_000));
    let ping = s.stats().kinds["ping"];
    assert_eq!(ping.sent, 2000);
    assert_eq!(ping.delivered + ping.dropped, 2000);
    assert!((500..700).contains(&ping.dropped), "{}", ping.dropped);
}

#[test]
fn partitions_cut_and_heal() {
    let mut s = sim(SimConfig::default(), 2);
    s.set_partition(p(1), 1);
    s.command(p(0), Cmd::Ping(p(1), 1));
    s.run_until_idle(Instant(1_000_000));
    assert!(s.take_events().is_empty());
    s.heal_partitions();
    s.command(p(0), Cmd::Ping(p(1), 2));
    s.run_until_idle(Instant(2_000_000));
    assert_eq!(s.take_events().len(), 1);
}

#[test]
fn contacts_count_each_pair_once_either_way_and_name_the_kind_that_made_it() {
    let mut s = sim(SimConfig::default(), 4);
    // Before tracking starts nothing is counted.
    s.command(p(0), Cmd::Ping(p(3), 1));
    s.run_until_idle(Instant(1_000_000));
    s.track_contacts();
    // 0 → 1 by a blob, then pings both ways between them: one pair, made by the blob.
    s.command(p(0), Cmd::Blob(p(1), 10));
    s.command(p(1), Cmd::Ping(p(0), 2));
    s.command(p(0), Cmd::Ping(p(1), 3));
    // 2 → 0 by a ping (its pong travels on the same pair).
    s.command(p(2), Cmd::Ping(p(0), 4));
    // A message to a peer that is not there makes no contact.
    s.command(p(2), Cmd::Ping(p(9), 5));
    // Nor one the partition drops.
    s.set_partition(p(3), 1);
    s.command(p(1), Cmd::Ping(p(3), 6));
    s.run_until_idle(Instant(2_000_000));
    let contacts = |n| s.node_stats(&p(n)).unwrap().contacts;
    assert_eq!(
        [contacts(0), contacts(1), contacts(2), contacts(3)],
        [2, 1, 1, 0]
    );
    let kinds = &s.stats().kinds;
    assert_eq!(kinds["blob"].first_contacts, 1);
    assert_eq!(kinds["ping"].first_contacts, 1);
    assert_eq!(kinds["pong"].first_contacts, 0);
    assert_eq!(s.stats().total.first_contacts, 2);
}

#[test]
fn crashed_nodes_get_nothing_and_senders_may_learn_it() {
    let cfg = SimConfig {
        unreachable_notice: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let mut s = sim(cfg, 2);
    s.command(p(1), Cmd::Tick(Duration::from_secs(1)));
    s.command(p(0), Cmd::Ping(p(1), 1));
    assert!(s.crash(p(1)).is_some());
    assert!(!s.is_alive(&p(1)));
    s.command(p(0), Cmd::Ping(p(1), 2));
    s.run_until(Instant(5_000_000));
    let ev = s.take_events();
    // The in-flight ping is dropped, the crashed node's timer never fires, and the sender of
    // the second ping hears that the peer is down.
    assert_eq!(ev, vec![(Instant(100_000), p(0), Event::Down(p(1)))]);
    assert_eq!(s.stats().kinds["ping"].dropped, 2);
    // A node that comes back under the same id is a fresh node.
    assert!(s.add_node(p(1), Probe::default()));
    assert!(!s.command(p(7), Cmd::Tick(Duration::from_secs(1))));
}

#[test]
fn timers_and_actions_run_in_time_order() {
    let mut s = sim(SimConfig::default(), 1);
    s.command(p(0), Cmd::Tick(Duration::from_secs(1)));
    s.schedule(Instant(2_500_000), |s| {
        s.crash(PeerId::synthetic(0));
    });
    s.run_until(Instant(10_000_000));
    let ticks: Vec<_> = s.take_events().into_iter().map(|e| e.0).collect();
    assert_eq!(ticks, vec![Instant(1_000_000), Instant(2_000_000)]);
    assert_eq!(s.now(), Instant(10_000_000));
}

#[test]
fn run_until_cond_stops_early() {
    let mut s = sim(SimConfig::default(), 1);
    s.command(p(0), Cmd::Tick(Duration::from_secs(1)));
    let mut seen = 0;
    let met = s.run_until_cond(Instant(100_000_000), |s| {
        seen = s.events.len();
        seen >= 3
    });
    assert!(met);
    assert_eq!(s.now(), Instant(3_000_000));
    assert!(!s.run_until_cond(Instant(4_500_000), |s| s.events.len() >= 100));
}

#[test]
fn same_seed_same_run_different_seed_different_run() {
    fn run(seed: u64) -> (Vec<u64>, Vec<(Instant, PeerId, Event)>, NetStats) {
        let cfg = SimConfig {
            seed,
            latency: Latency::Exponential {
                min: Duration::from_millis(5),
                mean: Duration::from_millis(40),
            },
            loss: 0.1,
            ..Default::default()
        };
        let mut s = sim(cfg, 20);
        for i in 0..500u64 {
            let a = s.rng().below(20);
            let b = s.rng().below(20);
            s.command(p(a), Cmd::Ping(p(b), i));
        }
        s.run_until_idle(Instant(60_000_000));
        let randoms = s.cores().flat_map(|(_, c)| c.random.clone()).collect();
        (randoms, s.take_events(), s.stats().clone())
    }
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).1, run(12).1);
}

#[test]
fn link_latency_is_symmetric_and_within_bounds() {
    let cfg = SimConfig {
        latency: Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        },
        ..Default::default()
    };
    let s = sim(cfg, 10);
    let mut distinct = std::collections::BTreeSet::new();
    for a in 0..10 {
        for b in 0..10 {
            let l = s.link_latency(&p(a), &p(b));
            assert_eq!(l, s.link_latency(&p(b), &p(a)));
            assert!(l >= Duration::from_millis(10) && l <= Duration::from_millis(20));
            distinct.insert(l);
        }
    }
    assert!(distinct.len() > 20, "links differ");
}
