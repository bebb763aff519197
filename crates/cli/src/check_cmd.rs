//! `fleetgate check`: will this system boot on that host, and can it switch live?

use std::path::PathBuf;
use std::process::ExitCode;

use fleetgate_check::{Decision, FlakeHost, Options};

use crate::facts_cmd::TargetArgs;

/// Arguments of `fleetgate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The new NixOS system: a store path or any directory laid out like a
    /// system toplevel (kernel, kernel-modules, initrd, boot.json, etc/…).
    #[arg(long, value_name = "S")]
    system: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    /// The system to compare against for a live switch; default: the
    /// target's /run/current-system (and /run/booted-system for reboots).
    #[arg(long, value_name = "C")]
    current: Option<PathBuf>,
    /// Print the report as a JSON document (stable; `format` = 1).
    #[arg(long)]
    json: bool,
    /// Also lint the evaluated configuration of `FLAKE#HOST` for known hazards.
    #[arg(long, value_name = "FLAKE#HOST")]
    flake: Option<String>,
    /// Assume NIXOS_NO_CHECK=1 on the host (pre-switch checks skipped).
    #[arg(long)]
    no_check: bool,
    /// Do not compute the closure diff.
    #[arg(long)]
    no_closure_diff: bool,
}

/// Runs `fleetgate check`: exit 0 (switch or boot), 1 (blocked), 2 (usage or I/O error).
pub fn run(args: &CheckArgs) -> ExitCode {
    let flake = match args.flake.as_deref().map(|f| FlakeHost::parse(f).ok_or(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(bad)) => {
            eprintln!("fleetgate: --flake wants FLAKE#HOST, got {bad:?}");
            return ExitCode::from(2);
        }
    };
    let system = match fleetgate_system::SystemToplevel::open(&args.system) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleetgate: cannot read the system {}: {e}", args.system.display());
            return ExitCode::from(2);
        }
    };
    let facts = match args.target.facts() {
        Ok(f) => f,
        Err(code) => return code,
    };
    let options = Options {
        current: args.current.clone(),
        no_check: args.no_check,
        flake,
        no_closure_diff: args.no_closure_diff,
    };
    let report = fleetgate_check::check(&system, &facts, &options);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", fleetgate_check::human::render(&report));
    }
    match report.decision {
        Decision::Switch | Decision::Boot => ExitCode::SUCCESS,
        Decision::Blocked => ExitCode::from(1),
    }
}
