//! peerlab's lab: the simulator experiments, local testnets of real nodes, and the demo.
//!
//! The discrete-event simulator the experiments run on is its own crate, `peerlab-sim`.
//!
//! # Layout
//!
//! Simulated networks:
//! - [`experiments`]: the `peerlab sim …` experiments (Chord, gossip, membership, flooding,
//!   swarm transfer, the full peer stack, a testnet's cold start), built on
//!   `peerlab_sim::Sim` and its churn schedules (`peerlab_sim::churn`).
//!
//! Real nodes on 127.0.0.1:
//! - [`process`]: local testnets (one process per node, or all in-process): starting and
//!   stopping nodes, `testnet.json`, health against the ideal ring, OS probes.
//! - [`measure`]: lookups and gossip arrival times on a running testnet, and the simulator's
//!   prediction for the same network; [`converge`]: `testnet converge`;
//!   [`process_churn`]: `testnet churn`, which kills and restarts node processes under a
//!   workload; [`split`]: `testnet split`, a partition between emulated hosts and its
//!   heal. [`plot`]: PNG + SVG charts of their results.
//! - [`compare`]: `testnet compare serf`, peerlab's membership and gossip beside HashiCorp
//!   Serf's on the same machine.
//!
//! The commands:
//! - [`cmd`]: the `peerlab testnet …` commands (flags and output); [`demo`]: `peerlab demo`.

pub mod cmd;
pub mod compare;
pub mod converge;
pub mod demo;
pub mod experiments;
pub mod measure;
pub mod plot;
pub mod process;
pub mod process_churn;
pub mod split;

pub use cmd::TestnetCommand;
pub use demo::DemoArgs;
