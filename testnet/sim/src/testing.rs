//! The harness protocol tests use: [`Net`], and the seed helper [`for_each_seed`].
//!
//! [`Net`] is quinn-proto's test `Pair` and foca's testing runtime grown to any number of
//! cores of any [`Protocol`](peerlab_overlay::Protocol): cores keyed by peer id, one queue
//! of messages and timers in virtual time that jumps to the next deadline, and three ways
//! to run it — [`Net::step`] (one event), [`Net::run_until`] (until a condition holds or a
//! deadline passes) and [`Net::drive`] (until no message is in flight). A test that never
//! settles fails at a livelock bound instead of hanging, and every failure names the seed.
//! Messages travel through the real codec ([`peerlab_overlay::codec`]), so what a core
//! receives is what the wire would give it; events and `Output::Offence` reports are kept
//! for assertions; muting, deafening, isolation, partitions and a message filter script
//! failures, and a tap plays an adversary that answers what it sees on the wire.
//!
//! # Seeds
//!
//! Randomised tests run a few seeds by default and any others on demand, through one
//! environment variable, [`SEEDS_ENV`] (`PEERLAB_SEEDS`): a comma-separated list of seeds
//! and ranges, e.g. `PEERLAB_SEEDS=7` to replay one seed, `PEERLAB_SEEDS=1..1000` to search
//! for a failure, `PEERLAB_SEEDS=1..=3,17`. [`for_each_seed`] runs a check per seed and,
//! when one fails, fails with `seed S failed (replay: PEERLAB_SEEDS=S): <why>`.
//!
//! # Example
//!
//! A core that answers pings, two nodes, and the checks a protocol test makes:
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use peerlab_overlay::{Cx, Instant, Message, Offence, PeerId, Protocol};
//! use peerlab_sim::testing::{Net, for_each_seed};
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! enum Msg { Ping(u64), Pong(u64) }
//! impl Message for Msg {
//!     fn kind(&self) -> &'static str { match self { Msg::Ping(_) => "ping", Msg::Pong(_) => "pong" } }
//! }
//!
//! /// Pings `target` every second once told to; reports a pong nobody asked for.
//! #[derive(Default)]
//! struct Pinger { target: Option<PeerId>, asked: Vec<u64> }
//! impl Protocol for Pinger {
//!     type Message = Msg; type Timer = (); type Command = PeerId; type Event = u64;
//!     fn handle_start(&mut self, _cx: &mut Cx<'_, Self>) {}
//!     fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: Msg) {
//!         match msg {
//!             Msg::Ping(n) => cx.send(from, Msg::Pong(n)),
//!             Msg::Pong(n) if self.asked.contains(&n) => cx.emit(n),
//!             Msg::Pong(_) => cx.penalize(from, Offence::Unsolicited),
//!         }
//!     }
//!     fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, _: ()) {
//!         if let Some(to) = self.target {
//!             let n = cx.rng().next_u64();
//!             self.asked.push(n);
//!             cx.send(to, Msg::Ping(n));
//!             cx.set_timer(Duration::from_secs(1), ());
//!         }
//!     }
//!     fn handle_command(&mut self, cx: &mut Cx<'_, Self>, to: PeerId) {
//!         self.target = Some(to);
//!         cx.set_timer(Duration::ZERO, ());
//!     }
//!     fn handle_peer_down(&mut self, _cx: &mut Cx<'_, Self>, _peer: PeerId) {}
//! }
//!
//! for_each_seed(1..4, |seed| {
//!     let (a, b) = (PeerId::synthetic(1), PeerId::synthetic(2));
//!     let mut net = Net::new(seed).with_latency(Duration::from_millis(10));
//!     net.add(a, Pinger::default());
//!     net.add(b, Pinger::default());
//!     net.command(a, b);
//!
//!     // Virtual time jumps from event to event: three round trips cost six deliveries.
//!     assert!(net.run_until(Instant(10_000_000), |net| net.events().len() == 3));
//!     assert_eq!(net.now(), Instant(2_020_000));
//!
//!     // While `b` is deaf, pings are lost and nothing comes back.
//!     net.deafen(b, Instant(5_000_000));
//!     net.run_for(Duration::from_secs(2));
//!     assert_eq!(net.events().len(), 3);
//!     assert!(net.stats().kinds["ping"].dropped >= 2);
//!
//!     // A pong nobody asked for, played by the test, is reported against its sender.
//!     net.deliver(b, a, Msg::Pong(0));
//!     assert_eq!(net.offences().last().map(|o| (o.2, o.3)), Some((b, Offence::Unsolicited)));
//! });
//! ```

mod net;
mod seeds;

pub use net::{DEFAULT_STEP_LIMIT, Net, Sent};
pub use seeds::{MAX_SEEDS, SEEDS_ENV, SeedsError, for_each_seed, parse_seeds, seeds};
