//! `fleetgate status`: desired, running, booted and default for every host, boot debt,
//! pending reboots and last results — a table on a terminal (80 columns), plain
//! `key=value` lines otherwise, one JSON document with `--json`. The exit code says
//! whether the fleet is converged (`fleetgate_status::fleet`: 0 converged, 1 a host
//! failed or is blocked, 3 not converged yet, 2 the status could not be read: `crate::exit`'s
//! usage exit code, its errors printed there).
//!
//! `--watch [SECS]` redraws every SECS seconds (at least 1; no tight loop: it sleeps on
//! a channel) until Ctrl-C or SIGTERM, which end it at once with exit code 0; with
//! `--json` it prints one document per refresh, one per line.
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use fleetgate_deploy::{Inventory, history};
use fleetgate_status::fleet::selected;
use fleetgate_status::{FleetStatus, HostStatus, Thresholds, render};
use miette::{IntoDiagnostic as _, WrapErr as _, miette};

use crate::status_sources::{self, now};

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 1 << 20;

/// `fleetgate status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The flake whose hosts to show (needed for --live and @tags; default: every host the sources know).
    pub flake: Option<String>,
    /// Only hosts matching these tags (`@web`) or name globs (`db*`).
    #[arg(long, value_delimiter = ',')]
    pub on: Vec<String>,
    /// Print one JSON document (with --watch: one per refresh, one per line).
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5")]
    pub watch: Option<u64>,
    /// The fleetgate server (channel serve) to read agent reports and manifests from.
    #[arg(long, env = "FLEETGATE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// File holding the server's read token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Deploy history database (default: `$XDG_STATE_HOME/fleetgate/history.sqlite`, if it exists).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Also read every selected host's live facts over SSH (needs the flake).
    #[arg(long)]
    pub live: bool,
    /// `fleetgate.toml` to use with the flake (default: beside the flake).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds without news after which a host is `stale`.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub stale_after: u64,
    /// Seconds each host (--live) or server request may take.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Send what was learnt as version-2 reports to this server (for fleets without agents).
    #[arg(long, value_name = "URL", requires = "host_tokens_file")]
    pub publish: Option<String>,
    /// `<host> <token>` lines: the report tokens --publish uses.
    #[arg(long, value_name = "FILE")]
    pub host_tokens_file: Option<PathBuf>,
}

/// Runs `fleetgate status`. Its errors (exit code 2: the status could not be read) go
/// through `fleetgate`'s one error path (`crate::exit::command_error`): miette's report on
/// stderr and, with `--json`, one JSON document with the cause chain and the help.
///
/// # Errors
/// Bad options, no source knows any host, an unreadable token file or history, a server
/// that refused the token or could not be reached.
pub fn run(args: &StatusArgs) -> miette::Result<ExitCode> {
    run_inner(args).map(ExitCode::from)
}

fn read_secret(path: &std::path::Path, what: &str) -> miette::Result<String> {
    let bytes = fleetgate_nix::read_small_file(path, MAX_TOKEN_FILE)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {what} {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

fn run_inner(args: &StatusArgs) -> miette::Result<u8> {
    if args.stale_after == 0 || args.timeout == 0 || args.watch == Some(0) {
        return Err(miette!("--stale-after, --timeout and --watch must be at least 1"));
    }
    if args.live && args.flake.is_none() {
        return Err(miette!(help = "fleetgate status FLAKE --live", "--live needs the flake that names the hosts"));
    }
    if args.on.iter().flat_map(|o| o.split(',')).any(|o| o.starts_with('@')) && args.flake.is_none() {
        return Err(miette!(help = "give the flake: fleetgate status FLAKE --on @tag", "tags come from the flake"));
    }
    let token = match (&args.server, &args.token_file) {
        (Some(_), Some(f)) => Some(read_secret(f, "the token file")?),
        (Some(_), None) => return Err(miette!(help = "--token-file FILE", "--server needs a read token")),
        _ => None,
    };
    let publish_tokens = match &args.host_tokens_file {
        Some(f) => Some(read_secret(f, "the host tokens file")?),
        None => None,
    };
    let inventory = match &args.flake {
        Some(flake) => {
            let nix = fleetgate_nix::Nix::detect().into_diagnostic().wrap_err("reading the flake needs Nix")?;
            Some(Inventory::load(&nix, flake, args.config.as_deref()).into_diagnostic()?)
        }
        None => None,
    };
    let interval = args.watch.map(Duration::from_secs);
    let stop = interval.map(|_| stop_signals()).transpose()?;
    let tty = std::io::stdout().is_terminal();
    loop {
        let fleet = gather(args, inventory.as_ref(), token.as_deref())?;
        if let (Some(url), Some(tokens)) = (&args.publish, &publish_tokens) {
            for (host, why) in status_sources::publish(url, tokens, &fleet.hosts, Duration::from_secs(args.timeout))? {
                eprintln!("fleetgate status: could not publish {host}: {why}");
            }
        }
        let mut out = std::io::stdout().lock();
        let text = if args.json {
            format!("{}\n", serde_json::to_string(&fleet).into_diagnostic()?)
        } else if tty {
            render::table(&fleet)
        } else {
            render::plain(&fleet)
        };
        if interval.is_some() && tty && !args.json {
            // Home and clear: the table is redrawn in place.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        drop(out);
        let (Some(interval), Some(stop)) = (interval, &stop) else { return Ok(fleet.exit_code()) };
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(0),
        }
        if !args.json && !tty {
            println!();
        }
    }
}

/// A channel that receives once SIGINT or SIGTERM arrives.
fn stop_signals() -> miette::Result<mpsc::Receiver<()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).into_diagnostic()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    Ok(rx)
}

/// Every source merged, selected and settled.
fn gather(args: &StatusArgs, inventory: Option<&Inventory>, token: Option<&str>) -> miette::Result<FleetStatus> {
    let timeout = Duration::from_secs(args.timeout);
    let mut hosts: BTreeMap<String, HostStatus> = BTreeMap::new();
    if let Some(inv) = inventory {
        for name in inv.hosts.keys() {
            hosts.insert(name.clone(), HostStatus::new(name));
        }
    }
    if let (Some(url), Some(token)) = (&args.server, token) {
        for h in status_sources::from_server(url, token, timeout)? {
            if inventory.is_none_or(|inv| inv.hosts.contains_key(&h.host)) {
                hosts.insert(h.host.clone(), h);
            }
        }
    }
    let history_path = args.history.clone().unwrap_or_else(history::default_path);
    status_sources::from_history(&history_path, args.history.is_some(), &mut hosts, inventory.is_none())?;
    let tags = |name: &str| inventory.and_then(|inv| inv.hosts.get(name)).map(|h| h.tags.clone()).unwrap_or_default();
    hosts.retain(|name, _| selected(&args.on, name, &tags(name)));
    if args.live
        && let Some(inv) = inventory
    {
        let names: Vec<String> = hosts.keys().cloned().collect();
        status_sources::from_live(inv, &names, &mut hosts, timeout);
    }
    if hosts.is_empty() {
        return Err(miette!(
            help = "give --server URL --token-file F, a flake (with --live), or --history FILE",
            "no hosts known to any source"
        ));
    }
    let now = now();
    let t = Thresholds { stale_after: i64::try_from(args.stale_after).unwrap_or(i64::MAX) };
    let mut list: Vec<HostStatus> = hosts.into_values().collect();
    for h in &mut list {
        fleetgate_status::state::settle(h, now, t);
    }
    Ok(FleetStatus::new(list, now))
}
