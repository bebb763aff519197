//! `fleetgate rollback`: hosts back to their last known-good generation,
//! through the same verified protocol as a deploy. Everything else is
//! `fleetgate_deploy::rollback`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use fleetgate_deploy::events::Bus;
use fleetgate_deploy::history::{self, History};
use fleetgate_deploy::{DeployOptions, Inventory, select};
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::deploy_cmd::show_progress;

/// `fleetgate rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// `FLAKE[#HOST[,HOST…]]` (default: `.`, every host).
    pub targets: Vec<String>,
    /// Only hosts matching these tags (`@web`) or name globs (`db*`).
    #[arg(long, value_delimiter = ',')]
    pub on: Vec<String>,
    /// Hosts rolled back at the same time.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Roll back even when the fallback of the verified reboot never booted on the host.
    #[arg(long)]
    pub force: bool,
    /// Seconds a host may take to come back from a reboot before it is power-cycled.
    #[arg(long, value_name = "SECS")]
    pub reboot_timeout: Option<u64>,
    /// Seconds a host waits for the confirmation of a live switch before it rolls back by itself.
    #[arg(long, value_name = "SECS")]
    pub confirm_timeout: Option<u64>,
    /// `fleetgate.toml` to use (default: beside the flake).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// History database (default: `$XDG_STATE_HOME/fleetgate/history.sqlite`).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fleetgate rollback`.
pub fn run(args: &RollbackArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => ExitCode::from(code),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: &RollbackArgs) -> miette::Result<u8> {
    let history = History::open(&args.history.clone().unwrap_or_else(history::default_path)).into_diagnostic()?;
    let (flake, named) = select::parse_targets(&args.targets).into_diagnostic()?;
    let nix = fleetgate_nix::Nix::detect()
        .into_diagnostic()
        .wrap_err("fleetgate rollback needs Nix 2.8 or newer on this machine")?;
    let flake = fleetgate_deploy::inventory::resolve_flake_ref(&flake);
    let inventory = Inventory::load(&nix, &flake, args.config.as_deref()).into_diagnostic()?;
    let selected = select::select(&inventory, &named, &args.on).into_diagnostic()?;
    let mut options = DeployOptions::from_settings(&inventory.config.deploy).into_diagnostic()?;
    if let Some(n) = args.max_parallel {
        options.max_parallel = n;
    }
    if let Some(s) = args.reboot_timeout {
        options.timeouts.reboot = Duration::from_secs(s);
    }
    if let Some(s) = args.confirm_timeout {
        options.timeouts.confirm = Duration::from_secs(s);
    }
    options.force = args.force;
    options.validate().into_diagnostic()?;
    let history = Mutex::new(history);
    let (tx, rx) = mpsc::channel();
    let ui = std::thread::spawn({
        let hosts = selected.clone();
        let tty = std::io::stderr().is_terminal();
        move || show_progress(&rx, &hosts, tty)
    });
    let bus = Bus::new(tx);
    let result = fleetgate_deploy::rollback::rollback(&nix, &inventory, &selected, &options, &bus, Some(&history));
    drop(bus);
    let _ = ui.join();
    let report = result.into_diagnostic()?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.human());
    }
    Ok(u8::try_from(report.exit_code).unwrap_or(2))
}
