//! `fleetgate agent`: the poll loop (or one poll, `--once`, for a timer).
//!
//! One agent per host (an `flock` on its directory's `lock`). Between polls
//! it sleeps — no CPU, woken only by SIGTERM/SIGINT (which end it after the
//! poll in progress) — for the poll interval with jitter, longer after
//! failures ([`crate::backoff`]). After every poll it writes its metrics.
//! With `--exit-when-changed PATH…` (the NixOS module passes its unit file
//! and configuration) it exits 0 once one of them changed, so that systemd
//! restarts it on the new binary and configuration — `restartIfChanged =
//! false` keeps a switch from restarting it mid-apply.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetgate_apply::health::HealthChecks;
use fleetgate_apply::remote::CallTimeouts;

use crate::agent::{Agent, Clock, SystemClock};
use crate::config::AgentConfig;
use crate::cycle::{End, PollOptions, poll};
use crate::host::{Host, LocalHost};
use crate::http::Client;
use crate::queue::{HttpSink, Queue, Sink};
use crate::state::{StateDir, StateError};
use crate::store::NixStore;

/// How the agent runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One poll, then exit.
    pub once: bool,
    /// Decide, do nothing (with `once`).
    pub dry_run: bool,
    /// Exit 0 once one of these files changed.
    pub exit_when_changed: Vec<PathBuf>,
}

/// Why the agent cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Its directory, its lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// No usable Nix.
    #[error("no usable Nix on this host: {0}")]
    Nix(String),
    /// The metrics port.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A file's identity: where it resolves, its size and modification time.
fn identity(path: &PathBuf) -> Option<(PathBuf, u64, std::time::SystemTime)> {
    let real = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&real).ok()?;
    Some((real, meta.len(), meta.modified().ok()?))
}

/// Set when the daemon started itself afresh: `<wait ms> <failures>`.
const AFRESH: &str = "FLEETGATE_AGENT_AFRESH";

/// After a poll that worked (fetched, checked, applied), the daemon becomes
/// a new image of itself (`execve`, same arguments; its state is on disk):
/// what the work touched — the check's code, the closure's metadata, the
/// allocator's high-water mark — is gone, and the idle daemon is back at its
/// baseline memory. Returns only if that failed. The one-agent lock is
/// released by the exec and taken again at once by the new image.
fn start_afresh(wait: Duration, failures: u32) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    match std::env::current_exe() {
        Ok(exe) => std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(AFRESH, format!("{} {failures}", wait.as_millis()))
            .exec(),
        Err(e) => e,
    }
}

/// How a daemon started afresh goes on: the failures so far and the wait
/// before its first poll.
fn resumed() -> (u32, Option<Duration>) {
    let Some(text) = std::env::var_os(AFRESH) else { return (0, None) };
    let text = text.to_string_lossy().into_owned();
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(ms)), Some(Ok(failures))) => {
            (u32::try_from(failures).unwrap_or(u32::MAX), Some(Duration::from_millis(ms.min(24 * 3600 * 1000))))
        }
        _ => (0, None),
    }
}

/// A log line on stderr (the journal adds the time; elsewhere it is here).
pub fn log_line(line: &str) {
    let now = jiff::Zoned::now();
    eprintln!("{} fleetgate agent: {line}", now.strftime("%Y-%m-%d %H:%M:%S"));
}

/// Runs the agent; returns how the last poll ended.
///
/// # Errors
/// [`DaemonError`] when it cannot run at all.
pub fn run(cfg: &AgentConfig, opts: &RunOptions) -> Result<End, DaemonError> {
    let dir = StateDir::open(cfg.agent_dir())?;
    let _lock = if opts.dry_run { None } else { Some(dir.lock()?) };
    let client = Client::new(cfg.timeouts.http);
    let mut source = crate::source::open(&cfg.manifest, &client);
    let mut store = NixStore::new(
        cfg.nix_bin_dir.clone(),
        cfg.caches.clone(),
        cfg.cache_keys.clone(),
        cfg.agent_dir().join("cache"),
        cfg.timeouts.http.max(Duration::from_secs(60)) * 4,
        cfg.timeouts.realise,
    )
    .map_err(|e| DaemonError::Nix(e.to_string()))?;
    let timeouts = CallTimeouts {
        command: cfg.timeouts.command,
        activation: cfg.timeouts.activation,
        probe: Duration::from_secs(15),
        power_cycle: Duration::from_secs(60),
    };
    let health = HealthChecks {
        units: cfg.health.units.clone(),
        commands: cfg.health.commands.clone(),
        // Set per change: what the host reaches before it (cycle::reach).
        tcp: Vec::new(),
        http: Vec::new(),
    };
    let mut host = LocalHost::new(timeouts, health);
    // The boot loader must be known before a resume or restore touches it.
    if let Err(e) = host.facts() {
        log_line(&format!("cannot gather this host's facts yet: {e}"));
    }
    let mut sink = match (cfg.report_url(), &cfg.token) {
        (None, _) => None,
        (Some(url), token) => {
            let token = match token {
                None => None,
                Some(src) => match fleetgate_channel::secret::Secret::load("report token", src) {
                    Ok(t) => Some(t.expose().to_owned()),
                    Err(e) => {
                        log_line(&format!("{e}; reports stay queued until it can be read"));
                        None
                    }
                },
            };
            Some(HttpSink::new(url, token, client.clone()))
        }
    };
    let (stop_tx, stop_rx) = mpsc::channel();
    if !opts.once {
        if let Ok(mut signals) =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        {
            let _ = std::thread::Builder::new().name("signals".into()).stack_size(64 << 10).spawn(move || {
                for _ in signals.forever() {
                    let _ = stop_tx.send(());
                }
            });
        }
    }
    let mut clock = SystemClock::new((!opts.once).then_some(stop_rx));
    let shared: crate::metrics::Shared = Arc::new(Mutex::new(String::new()));
    if let (Some(addr), false) = (cfg.metrics.listen, opts.once) {
        crate::metrics::serve(addr, shared.clone()).map_err(|source| DaemonError::Metrics { addr, source })?;
    }
    let watched: Vec<_> = opts.exit_when_changed.iter().map(|p| (p.clone(), identity(p))).collect();
    let (mut failures, resumed_wait) = resumed();
    if !opts.once && resumed_wait.is_none() {
        log_line(&format!("starting for host {} ({} s between polls)", cfg.host, cfg.poll_interval.as_secs()));
    }
    let mut first = true;
    loop {
        if first {
            first = false;
            let soon = dir.load().map(|s| s.attempt.is_some()).unwrap_or(false);
            let wait = match resumed_wait {
                _ if opts.once => Duration::ZERO,
                Some(wait) => wait,
                None => crate::backoff::first_poll(cfg.poll_interval, soon),
            };
            if !wait.is_zero() && !clock.sleep(wait) {
                return Ok(End::Idle);
            }
        }
        let end = {
            let mut log = |line: &str| log_line(line);
            let mut agent = Agent {
                cfg,
                dir: &dir,
                state: dir.load()?,
                source: source.as_mut(),
                store: &mut store,
                host: &mut host,
                queue: Queue::new(dir.path()),
                sink: sink.as_mut().map(|s| s as &mut dyn Sink),
                clock: &mut clock,
                log: &mut log,
                worked: false,
            };
            let end = poll(&mut agent, PollOptions { dry_run: opts.dry_run });
            (end, agent.state, agent.worked)
        };
        let (end, state, worked) = end;
        if !opts.dry_run {
            write_metrics(cfg, &state, &mut host, &dir, &shared, clock.unix());
        }
        drop(state);
        if opts.once {
            return Ok(end);
        }
        failures = if end.backs_off() { failures.saturating_add(1) } else { 0 };
        if let Some((path, _)) = watched.iter().find(|(p, before)| identity(p) != *before) {
            log_line(&format!("{} changed: exiting so that the service manager starts the new agent", path.display()));
            return Ok(end);
        }
        let wait = crate::backoff::next_poll(cfg.poll_interval, cfg.max_backoff, failures);
        if worked && !clock.stopped() {
            // Everything it needs is on disk: the new image sleeps `wait`, then polls.
            let error = start_afresh(wait, failures);
            log_line(&format!("cannot start afresh ({error}); going on in this process"));
        }
        if !clock.sleep(wait) || clock.stopped() {
            log_line("stopping (signal)");
            return Ok(end);
        }
    }
}

fn write_metrics(
    cfg: &AgentConfig,
    state: &crate::state::AgentState,
    host: &mut LocalHost,
    dir: &StateDir,
    shared: &crate::metrics::Shared,
    now: u64,
) {
    if cfg.metrics.textfile.is_none() && cfg.metrics.listen.is_none() {
        return;
    }
    let view = host.view().ok();
    let text = crate::metrics::render(&crate::metrics::Inputs {
        cfg,
        state,
        view: view.as_ref(),
        suspended: dir.suspended().is_some(),
        queued: Queue::new(dir.path()).len(),
        now,
    });
    if let Some(path) = &cfg.metrics.textfile {
        if let Err(e) = crate::metrics::write_textfile(path, &text) {
            log_line(&format!("cannot write the metrics: {e}"));
        }
    }
    if let Ok(mut t) = shared.lock() {
        *t = text;
    }
}
