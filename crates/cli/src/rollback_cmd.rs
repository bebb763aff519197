//! `fleetgate rollback`: hosts back to their last known-good generation,
//! through the same verified protocol as a deploy. Everything else is
//! `fleetgate_deploy::rollback`.

use std::process::ExitCode;
use std::sync::Mutex;

use clap::Args;
use fleetgate_deploy::{DeployOptions, Inventory, select};
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::deploy_cmd::{HostArgs, RunArgs, progress};

/// `fleetgate rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Which hosts.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Hosts rolled back at the same time.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Roll back even when the fallback of the verified reboot never booted on the host.
    #[arg(long)]
    pub force: bool,
    /// Timeouts, `fleetgate.toml` and history.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `fleetgate rollback`; an error (the run could not start: exit 2) is
/// printed by `main`.
pub fn run(args: &RollbackArgs) -> miette::Result<ExitCode> {
    run_inner(args).map(ExitCode::from)
}

fn run_inner(args: &RollbackArgs) -> miette::Result<u8> {
    let history = args.run.open_history()?;
    let (flake, named) = select::parse_targets(&args.hosts.targets).into_diagnostic()?;
    let nix = fleetgate_nix::Nix::detect()
        .into_diagnostic()
        .wrap_err("fleetgate rollback needs Nix 2.8 or newer on this machine")?;
    let flake = fleetgate_deploy::inventory::resolve_flake_ref(&flake);
    let inventory = Inventory::load(&nix, &flake, args.run.config.as_deref()).into_diagnostic()?;
    let selected = select::select(&inventory, &named, &args.hosts.on).into_diagnostic()?;
    let mut options = DeployOptions::from_settings(&inventory.config.deploy).into_diagnostic()?;
    if let Some(n) = args.max_parallel {
        options.max_parallel = n;
    }
    args.run.apply_timeouts(&mut options);
    options.force = args.force;
    options.validate().into_diagnostic()?;
    let history = Mutex::new(history);
    let (bus, ui) = progress(&selected);
    let result = fleetgate_deploy::rollback::rollback(&nix, &inventory, &selected, &options, &bus, Some(&history));
    drop(bus);
    ui.finish();
    args.run.print(&result.into_diagnostic()?)
}
