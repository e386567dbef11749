//! `peerlab`: a peer-to-peer overlay node and experiment lab.
//!
//! This is the binary edge: argument parsing, output formatting and exit codes. Everything
//! else lives in the library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc: an in-process testnet of 1000 nodes spent 28 % of
/// its CPU in glibc's `_int_malloc` (fragmented bins), and 300 in-process nodes held ~100 KB
/// per connection with jemalloc against ~130 KB with glibc and ~140 KB with mimalloc. See
/// docs/architecture.md.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod commands;
use peerlab_testnet::experiments::SimCommand;
use peerlab_testnet::{DemoArgs, TestnetCommand};

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
    /// Local testnets of real nodes on 127.0.0.1 or on emulated hosts: up, status, down,
    /// lookups, converge, churn, partition, heal, impair, split.
    Testnet {
        /// Print one JSON object instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: TestnetCommand,
    },
    /// Start a 32-node testnet and show DHT, search, gossip and swarm transfer working,
    /// with measured figures; exits non-zero if a step fails.
    #[command(after_help = "Example:\n  peerlab demo\n  peerlab demo --in-process --json")]
    Demo {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: DemoArgs,
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
        Command::Testnet { json, command } => {
            let out = command.run(!json)?;
            if json {
                println!("{}", serde_json::to_string(&out.json)?);
            } else {
                print!("{}", out.text);
            }
            Ok(())
        }
        Command::Demo { json, args } => {
            let program = peerlab_testnet::process::NodeProgram::current_peerlab()?;
            let report = peerlab_testnet::demo::run(&args, Some(program), !json)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render_table());
            }
            if !report.ok {
                anyhow::bail!("the demo failed (see the table above)");
            }
            Ok(())
        }
        Command::Node(cmd) => commands::run(cmd),
    }
}
