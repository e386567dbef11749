//! peerlab's lab: the simulator experiments, local testnets, and the demo.
//!
//! The discrete-event simulator itself is the `peerlab-sim` crate.
//!
//! # Layout
//!
//! - [`experiments`]: the `peerlab sim …` experiments, built on `peerlab_sim::Sim`.
//! - [`local`]: local testnets of real nodes on 127.0.0.1 (processes or in-process),
//!   `testnet.json`, health (ideal ring, complete membership), orphan-free shutdown.
//! - [`measure`]: lookups and gossip arrival times on a running testnet; the simulator's
//!   prediction for the same network. [`converge`] and [`churn`]: the `testnet converge`
//!   and `testnet churn` experiments. [`plot`]: PNG + SVG charts.
//! - [`cmd`]: the `peerlab testnet …` commands; [`demo`]: `peerlab demo`.

pub mod churn;
pub mod cmd;
pub mod converge;
pub mod demo;
pub mod experiments;
pub mod local;
pub mod measure;
pub mod plot;

pub use cmd::TestnetCommand;
pub use demo::DemoArgs;
