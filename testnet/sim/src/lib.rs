//! peerlab's deterministic simulator and the test harness of its protocol crates.
//!
//! Every protocol in peerlab is a sans-IO core ([`peerlab_overlay::Protocol`]): it never
//! reads a clock, a socket or a global random source. This crate drives such cores without
//! any I/O, in virtual time, so the same seed gives the same run byte for byte. It depends
//! on `peerlab-overlay` only: the protocol crates use it in their tests, and the lab
//! (`peerlab-testnet`) builds its `peerlab sim …` experiments on it.
//!
//! # Layout
//!
//! - [`Sim`] (`engine.rs`): the discrete-event simulator for experiments — thousands of
//!   cores, one event queue ordered by (time, sequence number), and a network model with
//!   per-link latency ([`Latency`]), upload and download queues charged with real frame
//!   lengths, loss, partitions and crashes. [`SimConfig`] holds its knobs; [`NetStats`] and
//!   [`NodeStats`] count traffic per message kind and per node.
//! - [`churn`]: churn schedules as data — Poisson joins and departures, steady-state
//!   sessions, explicit scripts — which experiments replay against a [`Sim`].
//! - [`testing`]: the harness protocol tests use — a few cores keyed by peer id, virtual
//!   time that jumps to the next deadline, `step` / `run_until` / `drive` with a livelock
//!   bound, muting and partitions, every message through the real codec — and the one seed
//!   helper (`PEERLAB_SEEDS`) that replays a failing seed.
//!
//! The two drivers differ on purpose. [`Sim`] models a network (bandwidth, latency spread,
//! loss) and scales to 10^5 nodes; [`testing::Net`] models nothing but order and time,
//! keeps every message and event for inspection, and fails loudly when a test livelocks.

pub mod churn;
mod config;
mod engine;
mod stats;
pub mod testing;

pub use config::{DEFAULT_EVENT_BUFFER_LIMIT, Latency, SimConfig};
pub use engine::Sim;
pub use stats::{KindStats, NetStats, NodeStats};
