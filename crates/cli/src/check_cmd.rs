//! `fleetgate check`: will this system boot on that host, and can it switch live?

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fleetgate_check::{Decision, FlakeHost, Options};

use crate::exit::EXIT_FAILED;
use crate::facts_cmd::{CliError, TargetArgs, parse_seconds};

/// How to get a built system on any Nix fleetgate supports: Nix 2.8 has no
/// `nix build --print-out-paths` and wants the experimental features named.
const BUILD_HINT: &str = "pass a built system: build it with `nix --extra-experimental-features 'nix-command flakes' build .#nixosConfigurations.HOST.config.system.build.toplevel` and pass `--system ./result`, or give a store path or a directory laid out like a system";

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
    pub json: bool,
    /// Also lint the evaluated configuration of `FLAKE#HOST` for known hazards.
    #[arg(long, value_name = "FLAKE#HOST")]
    flake: Option<String>,
    /// Assume NIXOS_NO_CHECK=1 on the host (pre-switch checks skipped).
    #[arg(long)]
    no_check: bool,
    /// Do not compute the closure diff.
    #[arg(long)]
    no_closure_diff: bool,
    /// Time limit for the whole check (facts included), in seconds (at
    /// least 1); past it the verdict is `blocked` (`check.incomplete`).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = parse_seconds)]
    deadline: u64,
}

/// Runs `fleetgate check`: exit 0 (switch or boot), 1 (blocked), or an error
/// (exit 2: usage or I/O).
pub fn run(args: &CheckArgs) -> miette::Result<ExitCode> {
    Ok(run_inner(args)?)
}

fn run_inner(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let deadline = Duration::from_secs(args.deadline);
    let flake = match args.flake.as_deref() {
        None => None,
        Some(text) => Some(FlakeHost::parse(text).ok_or_else(|| {
            CliError::new(format!("--flake wants FLAKE#HOST, got {text:?}"))
                .with_help("name the flake and the host, as nixos-rebuild --flake takes them: `--flake .#web1`, `--flake /srv/fleet#db1`")
        })?),
    };
    let system = fleetgate_system::SystemToplevel::open(&args.system).map_err(|e| {
        CliError::new(format!("cannot read the system {}", args.system.display())).caused_by(e).with_help(BUILD_HINT)
    })?;
    // The new system's module metadata and initrd are read while the
    // host's facts are (fleetgate_check::prefetch).
    let prefetch = fleetgate_check::Prefetch::start(&system);
    let facts = args.target.facts_within(deadline)?;
    let options = Options {
        current: args.current.clone(),
        no_check: args.no_check,
        flake,
        no_closure_diff: args.no_closure_diff,
        lint_inputs: None,
        deadline: Some(deadline.saturating_sub(started.elapsed())),
    };
    let report = fleetgate_check::check_prefetched(&system, &facts, &options, prefetch);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", fleetgate_check::human::render(&report));
    }
    Ok(match report.decision {
        Decision::Switch | Decision::Boot => ExitCode::SUCCESS,
        Decision::Blocked => ExitCode::from(EXIT_FAILED),
    })
}
