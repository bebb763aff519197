//! `fleetgate-channel`: the `fleetgate channel` commands as a program of their own, for
//! CI images that only promote — and for this crate's tests, which run it as a real
//! process (exit codes, stdout and stderr, signals to `serve`).
use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

/// Per-host tested channels: binary cache, nixos-tested-<host> branches, signed manifests.
#[derive(Debug, clap::Parser)]
#[command(name = "fleetgate-channel", version, about)]
struct Cli {
    #[command(flatten)]
    channel: fleetgate_channel::cli::ChannelArgs,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => fleetgate_channel::cli::run(cli.channel),
        Err(e) => fleetgate_channel::cli::usage_error(&e, args.get(1..).unwrap_or_default()),
    }
}
