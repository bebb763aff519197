//! The `fleetgate channel` subcommand (placeholder).
use std::process::ExitCode;

/// Arguments of `fleetgate channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {}

/// Runs `fleetgate channel`; returns the process exit code.
pub fn run(_args: ChannelArgs) -> ExitCode {
    ExitCode::from(2)
}
