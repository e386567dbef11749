//! Simulator experiments behind `peerlab sim …`.
//!
//! Each experiment module holds a parameter struct (its command-line flags), a serialisable
//! report with the figures it measured, and `run`. Reports print as a short table, or as one
//! JSON object with `--json`; every key but `wall_seconds` is a function of the parameters
//! and the seed.

use clap::Subcommand;

pub mod attack;
pub mod chord;
pub mod flood;
pub mod gossip;
pub mod peer;
pub mod startup;
pub mod swarm;
pub mod swarm_sweep;

/// Why an experiment could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A parameter is out of range or inconsistent with another.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The run finished but a check on its outcome failed.
    #[error("experiment failed: {0}")]
    Failed(String),
}

/// Shorthand for rejecting a parameter.
#[allow(dead_code)]
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, ExperimentError> {
    Err(ExperimentError::InvalidArgument(msg.into()))
}

/// The experiments `peerlab sim` offers.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Hostile peers against the real cores: honest success with and without the defenses.
    Attack(attack::Params),
    /// Chord DHT: path length, load balance, simultaneous failures and churn.
    Chord(chord::Params),
    /// Gnutella-style search (flood, expanding ring, random walkers) over an unstructured overlay.
    Flood(flood::Params),
    /// Gossip: rumor mongering and anti-entropy spreading updates.
    Gossip(gossip::Params),
    /// SWIM membership: failure detection and dissemination.
    Membership(gossip::MembershipParams),
    /// The full stack (membership, Chord lookups and replicated storage, as `node::Peer`
    /// runs them) on many simulated peers under churn.
    Peer(peer::Params),
    /// `testnet up` in the simulator: how long a cold-started testnet's ring and
    /// membership take to converge, with the nodes' exact testnet configuration.
    Startup(startup::Params),
    /// BitTorrent-style swarm transfer: flash crowd or Poisson arrivals, corrupt peers,
    /// rarest first versus random, against the Kumar & Ross bound.
    Swarm(swarm::Params),
}

/// What an experiment printed: a human table and a JSON object.
#[derive(Debug)]
pub struct Rendered {
    /// Short human-readable table.
    pub table: String,
    /// The full report as one JSON object.
    pub json: serde_json::Value,
}

impl SimCommand {
    /// Runs the chosen experiment.
    pub fn run(&self) -> Result<Rendered, ExperimentError> {
        match self {
            SimCommand::Attack(p) => attack::render(p),
            SimCommand::Chord(p) => chord::run(p).map(|r| rendered(&r, r.render_table())),
            SimCommand::Flood(p) => flood::run(p).map(|r| rendered(&r, r.render_table())),
            SimCommand::Gossip(p) => gossip::run(p).map(|r| rendered(&r, r.render_table())),
            SimCommand::Membership(p) => {
                gossip::run_membership(p).map(|r| rendered(&r, r.render_table()))
            }
            SimCommand::Peer(p) => peer::run(p).map(|r| rendered(&r, r.render_table())),
            SimCommand::Startup(p) => startup::run(p).map(|r| rendered(&r, r.render_table())),
            SimCommand::Swarm(p) if p.sweep => {
                let points = swarm_sweep::grid(p);
                swarm_sweep::run_sweep(&points, p.seeds, p.jobs, !p.sweep_full)
                    .map(|r| rendered(&r, r.render_table()))
            }
            SimCommand::Swarm(p) => swarm::run(p).map(|r| rendered(&r, r.render_table())),
        }
    }
}

/// Renders a serialisable report.
#[allow(dead_code)]
pub(crate) fn rendered<R: serde::Serialize>(report: &R, table: String) -> Rendered {
    Rendered {
        table,
        json: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
    }
}
