//! `fleetgate`: the command-line front end. It only parses arguments and wires the
//! library crates together; every decision lives in a library crate.
//!
//! What escapes a command — clap's usage errors and a command's own error — is
//! printed here and only here ([`exit`]): miette text on stderr and, with
//! `--json`, exactly one JSON document on stdout.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod agent_cmd;
mod check_cmd;
mod deploy_cmd;
mod exit;
mod facts_cmd;
mod generate_cmd;
mod help_defaults;
mod history_cmd;
mod history_render;
mod install_cmd;
mod install_progress;
mod live_lines;
mod resume_cmd;
mod rollback_cmd;
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
    /// Hosts back to their last known-good generation, through the same verified protocol.
    Rollback(rollback_cmd::RollbackArgs),
    /// On a host, at boot: finish a verified reboot its deployer did not live to finish.
    ResumePending(resume_cmd::ResumeArgs),
    /// Past deploy runs and each host's outcome, from the history database.
    History(history_cmd::HistoryArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(generate_cmd::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(generate_cmd::ManArgs),
    /// On a host: upgrade to its tested build only (signed manifest, cache, same pre-flight, verified reboot).
    Agent(agent_cmd::AgentArgs),
    /// Desired, running, booted and default system of every host, boot debt, pending reboots.
    Status(status_cmd::StatusArgs),
    /// Install NixOS on a running machine (nixos-anywhere's job): pre-flight, kexec, disko, install, reboot, each proven.
    Install(install_cmd::InstallArgs),
}

impl Command {
    /// Whether the command prints JSON (its errors then are JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Facts(a) => a.json,
            Command::Check(a) => a.json,
            Command::Deploy(a) => a.run.json,
            Command::Rollback(a) => a.run.json,
            Command::History(a) => a.json,
            Command::Install(a) => a.json,
            Command::Status(a) => a.json,
            // `channel` and `agent` print their own JSON documents, failures included.
            Command::Channel(_)
            | Command::Agent(_)
            | Command::ResumePending(_)
            | Command::Completions(_)
            | Command::Man(_) => false,
        }
    }
}

/// The whole command line, as `--help`, the completions and the man page show it.
fn command() -> clap::Command {
    help_defaults::show(Cli::command())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match command().try_get_matches_from(&args).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(&e, exit::wants_json(&args)),
    };
    let json = cli.command.json();
    let result = match cli.command {
        Command::Channel(args) => Ok(fleetgate_server::cli::run(args)),
        Command::Facts(args) => facts_cmd::run(&args),
        Command::Check(args) => check_cmd::run(&args),
        Command::Deploy(args) => deploy_cmd::run(&args),
        Command::Rollback(args) => rollback_cmd::run(&args),
        Command::ResumePending(args) => Ok(resume_cmd::run(&args)),
        Command::History(args) => history_cmd::run(&args),
        Command::Completions(args) => generate_cmd::completions(&args, command()),
        Command::Man(args) => generate_cmd::man(&args, command()),
        Command::Agent(args) => Ok(agent_cmd::run_agent(&args)),
        Command::Status(args) => status_cmd::run(&args),
        Command::Install(args) => install_cmd::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(report) => exit::command_error(&report, json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        // clap's own checks (conflicting names, bad defaults), with the defaults shown.
        command().debug_assert();
    }
}
