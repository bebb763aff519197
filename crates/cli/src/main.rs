//! `fleetgate`: the command-line front end. It only parses arguments and wires the
//! library crates together; every decision lives in a library crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a fleet of NixOS machines up to date without ever leaving one unbootable.
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// CI side: promote tested builds to per-host channels (cache, branch, signed manifest).
    Channel(fleetgate_channel::cli::ChannelArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Channel(args) => fleetgate_channel::cli::run(args),
    }
}
