//! `peerlab`: a peer-to-peer overlay node and experiment lab.
//!
//! This is the binary edge: argument parsing, output formatting and exit codes. Everything
//! else lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
use peerlab_testnet::experiments::SimCommand;

/// A peer-to-peer overlay node and experiment lab: Chord DHT, gossip, flooding search and
/// swarm file transfer, plus a deterministic simulator that runs the same protocol code.
#[derive(Debug, Parser)]
#[command(name = "peerlab", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an experiment in the deterministic simulator (same seed, same figures).
    Sim {
        /// Print one JSON object instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        experiment: SimCommand,
    },
    #[command(flatten)]
    Node(commands::NodeCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sim { json, experiment } => {
            let out = experiment.run()?;
            if json {
                println!("{}", serde_json::to_string(&out.json)?);
            } else {
                print!("{}", out.table);
            }
            Ok(())
        }
        Command::Node(cmd) => commands::run(cmd),
    }
}
