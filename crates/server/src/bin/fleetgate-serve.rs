//! `fleetgate-serve`: `fleetgate channel serve` as a program of its own, for a machine
//! that only runs the service — and for this crate's tests, which run it as a real
//! process (exit codes, logs, signals).
use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

/// fleetgate's HTTP service: CI hooks, signed manifests, host reports, fleet status.
#[derive(Debug, clap::Parser)]
#[command(name = "fleetgate-serve", version, about)]
struct Cli {
    #[command(flatten)]
    serve: fleetgate_server::cli::ServeArgs,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => fleetgate_server::cli::run_serve(cli.serve),
        Err(e) => fleetgate_channel::cli::usage_error(&e, args.get(1..).unwrap_or_default()),
    }
}
