//! peerlab's lab: the deterministic simulator, local testnets, and the experiments.
//!
//! # Layout
//!
//! - [`sim`]: the discrete-event simulator that drives any sans-IO core
//!   (`peerlab_overlay::Protocol`) with virtual time, a seeded RNG and a network model.
//! - [`experiments`]: the `peerlab sim …` experiments.

pub mod experiments;
pub mod sim;
