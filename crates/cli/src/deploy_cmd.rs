//! `fleetgate deploy`: arguments, progress on the terminal, the final table
//! or the JSON report. Everything else is `fleetgate-deploy`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use fleetgate_deploy::copy::human_bytes;
use fleetgate_deploy::events::{Bus, Event, EventKind};
use fleetgate_deploy::history::{self, History};
use fleetgate_deploy::{DeployOptions, Deployer, FleetPlanner, Inventory, Strategy, select};
use miette::{IntoDiagnostic as _, WrapErr as _};

use crate::exit::EXIT_USAGE;

/// `fleetgate deploy` arguments.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Which hosts.
    #[command(flatten)]
    pub hosts: HostArgs,
    /// Rollout: `all`, `canary` (canary hosts first, fully verified) or `waves`.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Canary hosts (default: the first selected host).
    #[arg(long, value_delimiter = ',')]
    pub canary: Vec<String>,
    /// Hosts deployed at the same time.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Stop starting new hosts once this many failed.
    #[arg(long)]
    pub max_failures: Option<usize>,
    /// Hosts per wave with `--strategy waves`.
    #[arg(long)]
    pub wave_size: Option<usize>,
    /// Deploy even when the plan is blocked (still with a verified reboot or magic rollback).
    #[arg(long)]
    pub force: bool,
    /// Always use a verified reboot, even when a live switch would do.
    #[arg(long)]
    pub reboot: bool,
    /// Reboot even when the boot loader cannot boot a generation once.
    #[arg(long)]
    pub allow_unverified_reboot: bool,
    /// Let targets fetch paths from their own substituters during the copy.
    #[arg(long)]
    pub substitute_on_destination: bool,
    /// Build and plan only; push nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Retry the hosts that failed, were unreachable or skipped in the last run.
    #[arg(long)]
    pub resume: bool,
    /// Timeouts, `fleetgate.toml` and history.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Which hosts `deploy` and `rollback` act on.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// `FLAKE[#HOST[,HOST…]]`, several allowed (default: `.`, every host).
    pub targets: Vec<String>,
    /// Only hosts matching these tags (`@web`) or name globs (`db*`).
    #[arg(long, value_delimiter = ',')]
    pub on: Vec<String>,
}

/// What `deploy` and `rollback` share: timeouts, `fleetgate.toml`, history, output.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Seconds a host waits for the confirmation of a live switch before it rolls back by itself.
    #[arg(long, value_name = "SECS")]
    pub confirm_timeout: Option<u64>,
    /// Seconds a host may take to come back from a reboot before it is power-cycled.
    #[arg(long, value_name = "SECS")]
    pub reboot_timeout: Option<u64>,
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

impl RunArgs {
    /// The timeouts given on the command line, over `o`'s.
    pub fn apply_timeouts(&self, o: &mut DeployOptions) {
        if let Some(s) = self.confirm_timeout {
            o.timeouts.confirm = Duration::from_secs(s);
        }
        if let Some(s) = self.reboot_timeout {
            o.timeouts.reboot = Duration::from_secs(s);
        }
    }

    /// Prints the report (the table, or `--json`); the exit code.
    ///
    /// # Errors
    /// None; a `Result` for the callers' `?`.
    pub fn print(&self, report: &fleetgate_deploy::RunReport) -> miette::Result<u8> {
        if self.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.human());
        }
        Ok(u8::try_from(report.exit_code).unwrap_or(EXIT_USAGE))
    }

    /// The history database.
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open_history(&self) -> miette::Result<History> {
        History::open(&self.history.clone().unwrap_or_else(history::default_path)).into_diagnostic()
    }
}

/// Runs `fleetgate deploy`; an error (the run could not start: exit 2) is
/// printed by `main`.
pub fn run(args: &DeployArgs) -> miette::Result<ExitCode> {
    run_inner(args).map(ExitCode::from)
}

fn run_inner(args: &DeployArgs) -> miette::Result<u8> {
    let history = args.run.open_history()?;
    let (flake, mut named) = select::parse_targets(&args.hosts.targets).into_diagnostic()?;
    let mut flake = flake;
    if args.resume {
        let unfinished = history.unfinished().into_diagnostic()?;
        if unfinished.hosts.is_empty() {
            eprintln!("every host of the last run ({}) is deployed; nothing to resume", unfinished.run_id);
            return Ok(0);
        }
        if args.hosts.targets.is_empty() {
            flake = unfinished.flake;
        }
        eprintln!("resuming run {}: {}", unfinished.run_id, unfinished.hosts.join(", "));
        named = unfinished.hosts;
    }
    let nix = fleetgate_nix::Nix::detect()
        .into_diagnostic()
        .wrap_err("fleetgate deploy needs Nix 2.8 or newer on this machine")?;
    let flake = fleetgate_deploy::inventory::resolve_flake_ref(&flake);
    // Flags and fleetgate.toml are merged and validated before anything is evaluated.
    let (config, config_path) =
        fleetgate_deploy::inventory::locate_config(&flake, args.run.config.as_deref()).into_diagnostic()?;
    let options = options(args, &config.deploy)?;
    let inventory = Inventory::load_with_config(&nix, &flake, config, config_path).into_diagnostic()?;
    if !args.run.json {
        match &inventory.config_path {
            Some(path) => eprintln!("using {}", path.display()),
            None => eprintln!(
                "no fleetgate.toml found for {flake} (looked beside its flake.nix): defaults apply; pass --config FILE to use one"
            ),
        }
    }
    let selected = select::select(&inventory, &named, &args.hosts.on).into_diagnostic()?;
    let planner = FleetPlanner::default();
    let history = Mutex::new(history);

    let (bus, ui) = progress(&selected);
    let deployer = Deployer {
        nix: &nix,
        inventory: &inventory,
        planner: &planner,
        options: &options,
        bus,
        // A dry run is a preview, not a run: it is not history.
        history: (!options.dry_run).then_some(&history),
    };
    let result = deployer.run(&selected);
    drop(deployer);
    ui.finish();
    args.run.print(&result.into_diagnostic()?)
}

fn options(args: &DeployArgs, settings: &fleetgate_deploy::config::DeploySettings) -> miette::Result<DeployOptions> {
    let mut o = DeployOptions::from_settings(settings).into_diagnostic()?;
    if let Some(s) = &args.strategy {
        o.strategy = Strategy::parse(s).into_diagnostic()?;
    }
    if !args.canary.is_empty() {
        o.canary.clone_from(&args.canary);
    }
    if let Some(n) = args.max_parallel {
        o.max_parallel = n;
    }
    if args.max_failures.is_some() {
        o.max_failures = args.max_failures;
    }
    if let Some(n) = args.wave_size {
        o.wave_size = n;
    }
    o.force = args.force;
    o.reboot = args.reboot;
    o.allow_unverified_reboot = args.allow_unverified_reboot;
    o.substitute_on_destination |= args.substitute_on_destination;
    o.dry_run = args.dry_run;
    args.run.apply_timeouts(&mut o);
    // One check, whatever the source of each value (flag or fleetgate.toml).
    o.validate().into_diagnostic()?;
    Ok(o)
}

/// The progress display of a run: its thread, fed by the bus.
pub(crate) struct ProgressUi(std::thread::JoinHandle<()>);

impl ProgressUi {
    /// Waits for the display to end (every bus dropped); on a terminal, a
    /// blank line then separates it from the table.
    pub(crate) fn finish(self) {
        let _ = self.0.join();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

/// A bus and the display it feeds, for `hosts`.
pub(crate) fn progress(hosts: &[String]) -> (Bus, ProgressUi) {
    let (tx, rx) = mpsc::channel();
    let hosts = hosts.to_vec();
    let tty = std::io::stderr().is_terminal();
    (Bus::new(tx), ProgressUi(std::thread::spawn(move || show_progress(&rx, &hosts, tty))))
}

/// Renders events: a spinner per host on a terminal (the copy with its
/// bytes), plain lines otherwise (the copy's total once, at its end).
fn show_progress(rx: &mpsc::Receiver<Event>, hosts: &[String], tty: bool) {
    let start = Instant::now();
    if !tty {
        for event in rx {
            if let Some(line) = plain_line(&event, start.elapsed()) {
                eprintln!("{line}");
            }
        }
        return;
    }
    let width = hosts.iter().map(String::len).max().unwrap_or(8);
    let mut lines = crate::live_lines::LiveLines::stderr(width);
    for host in hosts {
        lines.add(host, "waiting");
    }
    for event in rx {
        let host = event.host.as_str();
        match event.kind {
            EventKind::Phase(p) => lines.show(host, p.as_str()),
            EventKind::Info(text) => lines.show(host, text),
            EventKind::CopyProgress { done_bytes, expected_bytes } => {
                lines.show(host, copy_progress_text(done_bytes, expected_bytes));
            }
            EventKind::Copied { bytes, paths } => lines.show(host, copied_text(bytes, paths)),
            EventKind::Waiting { what, left_secs } => lines.show(host, waiting_text(&what, left_secs)),
            EventKind::Finished { ok, summary } => lines.finish(host, ok, &summary),
        }
    }
    lines.abandon_unfinished();
}

/// One plain progress line: `[  12.3s] web1: copy`; `None` for the copy's
/// running byte counts (plain output gets the total once, from
/// [`EventKind::Copied`]).
pub fn plain_line(event: &Event, elapsed: Duration) -> Option<String> {
    let what = match &event.kind {
        EventKind::Phase(p) => p.as_str().to_owned(),
        EventKind::Info(text) => text.clone(),
        EventKind::CopyProgress { .. } => return None,
        EventKind::Copied { bytes, paths } => copied_text(*bytes, *paths),
        EventKind::Waiting { what, left_secs } => waiting_text(what, *left_secs),
        EventKind::Finished { summary, .. } => summary.clone(),
    };
    Some(format!("[{:>6.1}s] {}: {what}", elapsed.as_secs_f64(), event.host))
}

/// `copy 12.3 MiB / 40.1 MiB` (or `copy 12.3 MiB` while the total is unknown).
pub fn copy_progress_text(done: u64, expected: Option<u64>) -> String {
    match expected {
        Some(total) => format!("copy {} / {}", human_bytes(done), human_bytes(total.max(done))),
        None => format!("copy {}", human_bytes(done)),
    }
}

/// `waiting for the host to come back from the reboot (42 s left)`.
pub fn waiting_text(what: &str, left_secs: u64) -> String {
    format!("waiting for {what} ({left_secs} s left)")
}

/// `copied 40.1 MiB (12 paths)`.
pub fn copied_text(bytes: u64, paths: u64) -> String {
    match paths {
        0 => "copied nothing: the host has every path".to_owned(),
        1 => format!("copied {} (1 path)", human_bytes(bytes)),
        n => format!("copied {} ({n} paths)", human_bytes(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event { host: "web1".into(), kind }
    }

    #[test]
    fn copy_progress_reads_as_bytes() {
        assert_eq!(copy_progress_text(12_897_485, Some(42_047_898)), "copy 12.3 MiB / 40.1 MiB");
        assert_eq!(copy_progress_text(0, Some(0)), "copy 0 B / 0 B");
        assert_eq!(copy_progress_text(2048, None), "copy 2.0 KiB");
        assert_eq!(copied_text(42_047_898, 3), "copied 40.1 MiB (3 paths)");
        assert_eq!(copied_text(0, 0), "copied nothing: the host has every path");
    }

    /// Issue 8: the boot wait and health checks were silent for a minute.
    #[test]
    fn waits_say_what_they_wait_for_with_the_time_left() {
        let t = Duration::from_millis(9_000);
        let wait = EventKind::Waiting { what: "the host to come back from the reboot".into(), left_secs: 295 };
        assert_eq!(
            plain_line(&event(wait), t).as_deref(),
            Some("[   9.0s] web1: waiting for the host to come back from the reboot (295 s left)")
        );
    }

    #[test]
    fn plain_output_prints_the_copy_once_at_its_end() {
        let t = Duration::from_millis(12_345);
        assert_eq!(plain_line(&event(EventKind::CopyProgress { done_bytes: 1, expected_bytes: Some(2) }), t), None);
        assert_eq!(
            plain_line(&event(EventKind::Copied { bytes: 42_047_898, paths: 3 }), t).as_deref(),
            Some("[  12.3s] web1: copied 40.1 MiB (3 paths)")
        );
        assert_eq!(
            plain_line(&event(EventKind::Phase(fleetgate_deploy::events::Phase::Copy)), t).as_deref(),
            Some("[  12.3s] web1: copy")
        );
    }
}
