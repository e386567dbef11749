//! The test harness (`peerlab_sim::testing`) through its public API, with a probe protocol:
//! virtual time, ordering, the livelock bound, the codec round trip, failures, capture, and
//! the seed helper end to end (this test binary re-run with `PEERLAB_SEEDS` set).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use peerlab_overlay::{Cx, Instant, Message, Offence, PeerId, Protocol, codec};
use peerlab_sim::testing::{Net, SEEDS_ENV, for_each_seed};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Pong(u64),
    /// `local` does not travel: a receiver sees 0 after a real codec round trip.
    Note {
        n: u64,
        #[serde(skip)]
        local: u64,
    },
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Input the probe rejects.
    Bad,
}

impl Message for Msg {
    fn kind(&self) -> &'static str {
        match self {
            Msg::Ping(_) => "ping",
            Msg::Pong(_) => "pong",
            Msg::Note { .. } => "note",
            Msg::Blob(_) => "blob",
            Msg::Bad => "bad",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Tick {
    id: u32,
    every: Option<Duration>,
}

enum Cmd {
    Send(PeerId, Msg),
    Timer(Duration, Tick),
    /// Answer every pong with a ping: an exchange that never ends.
    Endless,
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Got(PeerId, Msg),
    Fired(u32),
    Down(PeerId),
}

#[derive(Default)]
struct Probe {
    random: u64,
    endless: bool,
}

impl Protocol for Probe {
    type Message = Msg;
    type Timer = Tick;
    type Command = Cmd;
    type Event = Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        self.random = cx.rng().next_u64();
    }
    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Msg) {
        match msg {
            Msg::Ping(n) => cx.send(from, Msg::Pong(n)),
            Msg::Pong(n) if self.endless => cx.send(from, Msg::Ping(n + 1)),
            Msg::Bad => {
                cx.penalize(from, Offence::Malformed);
                return;
            }
            _ => {}
        }
        cx.emit(Event::Got(from, msg));
    }
    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, tick: Tick) {
        cx.emit(Event::Fired(tick.id));
        if let Some(every) = tick.every {
            cx.set_timer(every, tick);
        }
    }
    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: Cmd) {
        match cmd {
            Cmd::Send(to, msg) => cx.send(to, msg),
            Cmd::Timer(after, tick) => cx.set_timer(after, tick),
            Cmd::Endless => self.endless = true,
        }
    }
    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        cx.emit(Event::Down(peer));
    }
}

fn p(n: u64) -> PeerId {
    PeerId::synthetic(n)
}

fn secs(s: u64) -> Instant {
    Instant(s * 1_000_000)
}

fn net(seed: u64, nodes: u64) -> Net<Probe> {
    let mut net = Net::new(seed);
    for n in 0..nodes {
        net.add(p(n), Probe::default());
    }
    net
}

fn tick(id: u32) -> Tick {
    Tick { id, every: None }
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("should have panicked");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn virtual_time_jumps_to_the_next_deadline() {
    let mut net = net(1, 1);
    net.command(p(0), Cmd::Timer(Duration::from_secs(30), tick(1)));
    net.command(p(0), Cmd::Timer(Duration::from_secs(3600), tick(2)));
    assert_eq!(net.next_deadline(), Some(secs(30)));
    assert_eq!(net.timers().count(), 2);
    // One step is one event, however far away it is.
    assert!(net.step());
    assert_eq!(net.now(), secs(30));
    assert!(net.step());
    assert_eq!(net.now(), secs(3600));
    assert_eq!(net.events_processed(), 2);
    assert!(!net.step(), "nothing left");
    // With nothing queued, advancing only moves the clock.
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.now(), secs(3610));
    assert_eq!(
        net.take_events()
            .into_iter()
            .map(|(t, _, e)| (t, e))
            .collect::<Vec<_>>(),
        vec![(secs(30), Event::Fired(1)), (secs(3600), Event::Fired(2))]
    );
}

#[test]
fn at_one_instant_messages_go_first_in_fifo_order_then_timers() {
    let mut net = net(1, 2);
    net.command(p(0), Cmd::Timer(Duration::ZERO, tick(9)));
    for n in 0..3 {
        net.command(p(0), Cmd::Send(p(1), Msg::Note { n, local: 0 }));
    }
    net.run_for(Duration::ZERO);
    let order: Vec<Event> = net.take_events().into_iter().map(|e| e.2).collect();
    let note = |n| Event::Got(p(0), Msg::Note { n, local: 0 });
    assert_eq!(order, vec![note(0), note(1), note(2), Event::Fired(9)]);
}

#[test]
fn latency_delays_every_message() {
    let mut net = Net::new(1).with_latency(Duration::from_millis(25));
    net.add(p(0), Probe::default());
    net.add(p(1), Probe::default());
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(4)));
    net.drive();
    // Ping arrives after 25 ms, the pong 25 ms later.
    assert_eq!(net.now(), Instant(50_000));
    let (at, who, e) = net.events().last().cloned().unwrap();
    assert_eq!(
        (at, who, e),
        (Instant(50_000), p(0), Event::Got(p(1), Msg::Pong(4)))
    );
}

#[test]
fn a_slowed_peer_delays_what_it_sends_and_receives() {
    let mut net = Net::new(1).with_latency(Duration::from_millis(10));
    for n in 0..3 {
        net.add(p(n), Probe::default());
    }
    net.slow_down(p(1), Duration::from_millis(300));
    // To and from the slowed peer: 310 ms each way; between the others: 10 ms.
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(1)));
    net.command(p(0), Cmd::Send(p(2), Msg::Ping(2)));
    net.drive();
    assert_eq!(net.now(), Instant(620_000));
    let got: Vec<_> = net
        .take_events()
        .into_iter()
        .map(|(t, _, e)| (t, e))
        .collect();
    assert_eq!(
        got,
        vec![
            (Instant(10_000), Event::Got(p(0), Msg::Ping(2))),
            (Instant(20_000), Event::Got(p(2), Msg::Pong(2))),
            (Instant(310_000), Event::Got(p(0), Msg::Ping(1))),
            (Instant(620_000), Event::Got(p(1), Msg::Pong(1))),
        ]
    );
    // Ended: back to the plain latency.
    net.slow_down(p(1), Duration::ZERO);
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(3)));
    net.drive();
    assert_eq!(net.now(), Instant(640_000));
}

#[test]
fn drive_settles_the_exchange_and_leaves_later_timers_queued() {
    let mut net = net(1, 2);
    net.command(
        p(1),
        Cmd::Timer(
            Duration::from_secs(1),
            Tick {
                id: 1,
                every: Some(Duration::from_secs(1)),
            },
        ),
    );
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(1)));
    net.drive();
    assert_eq!(net.in_flight(), 0);
    assert_eq!(net.now(), Instant::ZERO, "the periodic timer did not run");
    assert_eq!(net.timers().count(), 1);
    assert_eq!(net.stats().kinds["pong"].delivered, 1);
}

#[test]
fn livelock_bound_fails_an_exchange_that_never_settles() {
    // Zero latency: the clock never moves, and the per-instant bound fires.
    let mut zero = net(9, 2).with_step_limit(1000);
    zero.command(p(0), Cmd::Endless);
    zero.command(p(0), Cmd::Send(p(1), Msg::Ping(0)));
    let why = panic_message(|| zero.drive());
    assert!(why.contains("livelock") && why.contains("seed 9"), "{why}");

    // With latency the clock moves, and drive's own bound fires.
    let mut slow = Net::new(4)
        .with_latency(Duration::from_millis(1))
        .with_step_limit(1000);
    slow.add(p(0), Probe::default());
    slow.add(p(1), Probe::default());
    slow.command(p(0), Cmd::Endless);
    slow.command(p(0), Cmd::Send(p(1), Msg::Ping(0)));
    let why = panic_message(|| slow.drive());
    assert!(why.contains("in flight after 1000 events"), "{why}");
    assert!(why.contains("seed 4"), "{why}");

    // A timer re-armed for `now` is caught by run_until as well.
    let mut timer = net(5, 1).with_step_limit(500);
    timer.command(
        p(0),
        Cmd::Timer(
            Duration::ZERO,
            Tick {
                id: 0,
                every: Some(Duration::ZERO),
            },
        ),
    );
    let why = panic_message(|| {
        let _ = timer.run_until(secs(1), |_| false);
    });
    assert!(why.contains("livelock: 501 events at 0.000000 s"), "{why}");

    // A busy but finite exchange under the bound is fine.
    let mut fine = net(1, 2).with_step_limit(1000);
    for n in 0..400 {
        fine.command(p(0), Cmd::Send(p(1), Msg::Ping(n)));
    }
    fine.drive();
    assert_eq!(fine.stats().kinds["pong"].delivered, 400);
}

#[test]
fn run_until_stops_when_the_condition_holds_or_at_the_deadline() {
    let mut net = net(1, 1);
    net.command(
        p(0),
        Cmd::Timer(
            Duration::from_secs(1),
            Tick {
                id: 0,
                every: Some(Duration::from_secs(1)),
            },
        ),
    );
    assert!(net.run_until(secs(100), |n| n.events().len() == 3));
    assert_eq!(net.now(), secs(3));
    assert!(!net.run_until(Instant(4_500_000), |n| n.events().len() == 100));
    assert_eq!(net.now(), Instant(4_500_000));
    assert_eq!(net.events().len(), 4);
}

#[test]
fn every_message_travels_through_the_codec() {
    let note = Msg::Note { n: 3, local: 42 };
    let mut wire = net(1, 2);
    wire.command(p(0), Cmd::Send(p(1), note.clone()));
    wire.drive();
    assert_eq!(
        wire.events()[0].2,
        Event::Got(p(0), Msg::Note { n: 3, local: 0 }),
        "the field serde skips did not travel"
    );
    // Without the codec the value is handed over as it was.
    let mut raw = Net::new(1).without_codec();
    raw.add(p(0), Probe::default());
    raw.add(p(1), Probe::default());
    raw.command(p(0), Cmd::Send(p(1), note.clone()));
    raw.drive();
    assert_eq!(raw.events()[0].2, Event::Got(p(0), note));

    // A message no node could send (over the frame limit) fails the test at the sender.
    let huge = Msg::Blob(vec![0; codec::DEFAULT_MAX_FRAME + 1]);
    let why = panic_message(|| wire.command(p(0), Cmd::Send(p(1), huge)));
    assert!(
        why.contains("codec refuses") && why.contains("blob"),
        "{why}"
    );
}

#[test]
fn frames_decode_as_on_the_wire_or_never_reach_the_core() {
    let mut net = net(1, 1);
    let frame = codec::encode(&Msg::Ping(8)).unwrap();
    net.deliver_frame(p(7), p(0), &frame).unwrap();
    assert!(net.deliver_frame(p(7), p(0), &[]).is_err());
    assert!(net.deliver_frame(p(7), p(0), &[9, 9, 9]).is_err());
    let mut bad_version = frame.clone();
    bad_version[0] = 0xff;
    assert!(net.deliver_frame(p(7), p(0), &bad_version).is_err());
    assert_eq!(
        net.events(),
        &[(Instant::ZERO, p(0), Event::Got(p(7), Msg::Ping(8)))]
    );
}

#[test]
fn offences_and_events_are_captured_with_time_and_peer() {
    let mut net = net(1, 2);
    net.advance_to(secs(5));
    net.command(p(1), Cmd::Send(p(0), Msg::Bad));
    net.deliver(p(3), p(0), Msg::Bad);
    net.drive();
    assert_eq!(
        net.offences(),
        &[
            // Delivered by hand at once, before the queued message.
            (secs(5), p(0), p(3), Offence::Malformed),
            (secs(5), p(0), p(1), Offence::Malformed),
        ]
    );
    assert_eq!(net.stats().offences, 2);
    assert!(net.events().is_empty(), "rejected input is not an event");
    assert_eq!(net.take_offences().len(), 2);
    assert!(net.offences().is_empty());
}

#[test]
fn a_crash_takes_timers_and_in_flight_messages_with_it() {
    let mut net = Net::new(1).with_latency(Duration::from_millis(10));
    for n in 0..3 {
        net.add(p(n), Probe::default());
    }
    net.command(p(1), Cmd::Timer(Duration::from_secs(1), tick(1)));
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(1)));
    net.command(p(1), Cmd::Send(p(2), Msg::Ping(2)));
    assert_eq!(net.in_flight(), 2);
    assert!(net.crash(p(1)).is_some());
    assert!(!net.contains(&p(1)));
    assert_eq!((net.in_flight(), net.timers().count()), (0, 0));
    // Back under the same id, the node starts afresh: no old timer fires.
    net.add(p(1), Probe::default());
    net.run_for(Duration::from_secs(5));
    assert!(net.events().is_empty(), "{:?}", net.events());
    assert!(net.crash(p(9)).is_none());
}

#[test]
fn mute_deafen_isolate_and_partitions_lose_messages_until_healed() {
    let ping = |net: &mut Net<Probe>, from: u64, to: u64| {
        net.command(p(from), Cmd::Send(p(to), Msg::Ping(0)));
        net.drive();
        let pongs = net
            .take_events()
            .iter()
            .filter(|e| matches!(e.2, Event::Got(_, Msg::Pong(_))))
            .count();
        pongs == 1
    };
    let mut net = net(1, 3);
    net.mute(p(0), secs(10));
    assert!(!ping(&mut net, 0, 1), "a muted node's ping is lost");
    assert!(!ping(&mut net, 1, 0), "and so is its pong");
    net.advance_to(secs(10));
    assert!(ping(&mut net, 0, 1), "the mute ended");

    net.deafen(p(1), secs(20));
    assert!(!ping(&mut net, 0, 1));
    assert!(
        !ping(&mut net, 1, 0),
        "a deaf node's own ping goes out, the pong is lost"
    );
    assert_eq!(net.stats().kinds["ping"].delivered, 3);
    net.restore(p(1));
    assert!(ping(&mut net, 0, 1), "restored");

    net.isolate(p(2), Instant(u64::MAX));
    assert!(!ping(&mut net, 0, 2) && !ping(&mut net, 2, 0));
    net.restore(p(2));

    net.set_partition(p(0), 1);
    assert!(!ping(&mut net, 0, 1) && !ping(&mut net, 1, 0));
    net.set_partition(p(1), 1);
    assert!(ping(&mut net, 0, 1), "same group");
    assert!(!ping(&mut net, 0, 2));
    net.heal_partitions();
    assert!(ping(&mut net, 0, 2));

    // A cut loses what is already in flight.
    let mut slow = Net::new(1).with_latency(Duration::from_secs(1));
    slow.add(p(0), Probe::default());
    slow.add(p(1), Probe::default());
    slow.command(p(0), Cmd::Send(p(1), Msg::Ping(0)));
    slow.deafen(p(1), secs(5));
    slow.drive();
    assert_eq!(slow.stats().kinds["ping"].dropped, 1);
}

#[test]
fn a_filter_loses_the_messages_it_picks_when_they_would_arrive() {
    let mut net = net(1, 2).with_latency(Duration::from_secs(1));
    // Odd pings are lost; the filter sees the sender, receiver, send time and message.
    net.set_filter(|m| !matches!(m.msg, Msg::Ping(n) if n % 2 == 1));
    for n in 0..4 {
        net.command(p(0), Cmd::Send(p(1), Msg::Ping(n)));
    }
    net.drive();
    let got: Vec<_> = net
        .take_events()
        .into_iter()
        .filter_map(|(_, at, e)| match e {
            Event::Got(_, Msg::Ping(n)) if at == p(1) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![0, 2]);
    assert_eq!(net.stats().kinds["ping"].dropped, 2);
    // Judged on arrival: a message sent before the filter was removed still gets through.
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(5)));
    net.clear_filter();
    net.drive();
    assert_eq!(net.stats().kinds["ping"].delivered, 3);
}

#[test]
fn a_tap_answers_what_it_sees_before_the_message_arrives() {
    let mut net = net(1, 2);
    // Peer 9 (no core) races every ping from 0 to 1 with a pong of its own.
    net.set_tap(|m| match m.msg {
        Msg::Ping(n) if (m.from, m.to) == (p(0), p(1)) => vec![(p(9), p(1), Msg::Pong(n))],
        _ => Vec::new(),
    });
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(7)));
    net.drive();
    let got: Vec<_> = net
        .take_events()
        .into_iter()
        .map(|(_, at, e)| (at, e))
        .collect();
    assert_eq!(
        got,
        vec![
            (p(1), Event::Got(p(9), Msg::Pong(7))),
            (p(1), Event::Got(p(0), Msg::Ping(7))),
            (p(0), Event::Got(p(1), Msg::Pong(7))),
        ]
    );
    net.clear_tap();
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(8)));
    net.drive();
    assert_eq!(net.take_events().len(), 2, "no race once the tap is gone");
}

#[test]
fn messages_taken_off_the_wire_never_arrive() {
    let mut net = net(1, 2).with_latency(Duration::from_secs(1));
    net.command(p(0), Cmd::Send(p(1), Msg::Ping(1)));
    net.command(p(1), Cmd::Send(p(0), Msg::Ping(2)));
    net.command(p(0), Cmd::Timer(Duration::from_secs(3), tick(4)));
    let taken = net.take_in_flight();
    assert_eq!(
        taken
            .iter()
            .map(|m| (m.from, m.to, &m.msg))
            .collect::<Vec<_>>(),
        vec![(p(0), p(1), &Msg::Ping(1)), (p(1), p(0), &Msg::Ping(2))]
    );
    assert_eq!(net.in_flight(), 0);
    net.run_for(Duration::from_secs(5));
    let events: Vec<_> = net.take_events().into_iter().map(|e| e.2).collect();
    assert_eq!(events, vec![Event::Fired(4)], "the timer stays queued");
}

#[test]
fn messages_to_outside_peers_are_logged_and_may_be_refused() {
    let mut net = Net::new(1)
        .with_send_log()
        .with_unreachable_notice(Duration::from_millis(100));
    net.add(p(0), Probe::default());
    net.command(p(0), Cmd::Send(p(5), Msg::Ping(1)));
    // The test plays peer 5: it sees the ping and answers it by hand.
    assert_eq!(net.sent().len(), 1);
    assert_eq!(
        (net.sent()[0].to, &net.sent()[0].msg),
        (p(5), &Msg::Ping(1))
    );
    net.deliver(p(5), p(0), Msg::Pong(1));
    net.drive();
    assert_eq!(
        net.take_events()
            .into_iter()
            .map(|(t, _, e)| (t, e))
            .collect::<Vec<_>>(),
        vec![
            (Instant::ZERO, Event::Got(p(5), Msg::Pong(1))),
            (Instant(100_000), Event::Down(p(5))),
        ]
    );
    assert_eq!(net.stats().kinds["ping"].dropped, 1);
    assert_eq!(net.take_sent().len(), 1);
    assert!(net.sent().is_empty());
}

#[test]
fn same_seed_same_run() {
    fn run(seed: u64) -> Vec<u64> {
        let net = net(seed, 5);
        net.cores().map(|(_, c)| c.random).collect()
    }
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
    let a = net(3, 5);
    assert_eq!(a.peers().collect::<Vec<_>>().len(), 5);
    assert_eq!(
        a.node(&p(2)).random,
        run(3)[a.peers().position(|q| q == p(2)).unwrap()]
    );
}

#[test]
fn node_lookups_name_the_seed_when_the_peer_is_missing() {
    let mut net = net(77, 1);
    assert!(net.get(&p(3)).is_none());
    let why = panic_message(|| net.command(p(3), Cmd::Endless));
    assert!(
        why.contains("not in the net") && why.contains("seed 77"),
        "{why}"
    );
    let why = panic_message(|| net.add(p(0), Probe::default()));
    assert!(why.contains("already in the net"), "{why}");
}

// ---- the seed helper, end to end ---------------------------------------------------------

/// Set by the parent test for its child runs; without it, the probe does nothing.
const PROBE_ENV: &str = "PEERLAB_SIM_SEED_PROBE";

/// Run as a child: checks seeds 1..4 by default, and fails on seed 5.
#[test]
fn seed_probe() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    for_each_seed(1..4, |seed| {
        println!("checking seed {seed}");
        assert_ne!(seed, 5, "seed five is bad");
    });
}

/// Runs [`seed_probe`] in a child with `PEERLAB_SEEDS` set to `seeds` (or unset); returns
/// whether it passed and what it printed.
fn probe(seeds: Option<&str>) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["seed_probe", "--exact", "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, "1");
    match seeds {
        Some(s) => cmd.env(SEEDS_ENV, s),
        None => cmd.env_remove(SEEDS_ENV),
    };
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_seed_helper_reads_one_variable_and_names_the_failing_seed() {
    let (ok, text) = probe(None);
    assert!(ok, "{text}");
    for s in 1..4 {
        assert!(text.contains(&format!("checking seed {s}")), "{text}");
    }

    let (ok, text) = probe(Some("2,5,8"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("checking seed 2") && text.contains("checking seed 5"),
        "{text}"
    );
    assert!(
        !text.contains("checking seed 8"),
        "stops at the failure: {text}"
    );
    assert!(
        !text.contains("checking seed 1\n"),
        "the default is not run: {text}"
    );
    assert!(
        text.contains("seed 5 failed (replay: PEERLAB_SEEDS=5)")
            && text.contains("seed five is bad"),
        "{text}"
    );

    let (ok, text) = probe(Some("4..=6"));
    assert!(!ok && text.contains("seed 5 failed"), "{text}");

    let (ok, text) = probe(Some("five"));
    assert!(
        !ok && text.contains("PEERLAB_SEEDS=five"),
        "a bad value fails: {text}"
    );
}
