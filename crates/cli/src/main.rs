//! `fleetgate`: the command-line front end. It only parses arguments and wires the
//! library crates together; every decision lives in a library crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check_cmd;
mod deploy_cmd;
mod facts_cmd;
mod status_cmd;
mod status_sources;

/// Keep a fleet of NixOS machines up to date without ever leaving one unbootable.
#[derive(Debug, Parser)]
#[command(name = "fleetgate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// CI side: promote tested builds to per-host channels (cache, branch, signed manifest).
    Channel(fleetgate_server::cli::ChannelArgs),
    /// What fleetgate knows about a host: root device chain and drivers, systems, boot loader.
    Facts(facts_cmd::FactsArgs),
    /// Decide before deploying whether a system will boot on a host, and whether it can switch live.
    Check(check_cmd::CheckArgs),
    /// Push a flake to hosts: canary and waves, magic rollback for live switches, verified reboots.
    Deploy(deploy_cmd::DeployArgs),
    /// Desired, running, booted and default system of every host, boot debt, pending reboots.
    Status(status_cmd::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Channel(args) => fleetgate_server::cli::run(args),
        Command::Facts(args) => facts_cmd::run(&args),
        Command::Check(args) => check_cmd::run(&args),
        Command::Deploy(args) => deploy_cmd::run(&args),
        Command::Status(args) => status_cmd::run(&args),
    }
}
