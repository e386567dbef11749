//! peerlab's lab: the deterministic simulator, local testnets, and the experiments.
//!
//! # Layout
//!
//! - [`sim`]: the discrete-event simulator that drives any sans-IO core
//!   (`peerlab_overlay::Protocol`) with virtual time, a seeded RNG and a network model.
//! - [`experiments`]: the `peerlab sim …` experiments.
//! - [`local`]: local testnets of real nodes on 127.0.0.1 (processes or in-process).

pub mod cmd;
pub mod converge;
pub mod demo;
pub mod experiments;
pub mod local;
pub mod measure;
pub mod plot;
pub mod sim;

pub use cmd::TestnetCommand;
pub use demo::DemoArgs;
