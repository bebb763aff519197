//! A run over the fleet: build once, then deploy host by host in waves
//! (canary first), at most `max_parallel` at a time, stopping new hosts
//! once `max_failures` failed. A failed host never rolls back others.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fleetgate_nix::Nix;

use crate::ahead::{Ahead, StopOnDrop};
use crate::build;
use crate::copy::FleetClosures;
use crate::error::DeployError;
use crate::events::{Bus, EventKind, Phase};
use crate::history::History;
use crate::host::{HostJob, deploy_host};
use crate::inventory::Inventory;
use crate::options::{DeployOptions, Strategy};
use crate::plan::Planner;
use crate::report::{HostReport, Outcome, RunReport, exit_code};

/// At least this many hosts' connections are logged in ahead of their
/// turn (twice `--max-parallel` when that is more).
const AHEAD_WINDOW: usize = 8;

/// A new run id: time and process, unique enough for one operator.
#[must_use]
pub fn new_run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:06x}-{}", now.as_secs(), now.subsec_micros(), std::process::id())
}

/// The waves of a run: lists of hosts deployed together.
#[must_use]
pub fn waves(selected: &[String], options: &DeployOptions) -> Vec<Vec<String>> {
    if options.strategy == Strategy::All || selected.len() <= 1 {
        return vec![selected.to_vec()];
    }
    let mut canary: Vec<String> = selected.iter().filter(|h| options.canary.contains(h)).cloned().collect();
    if canary.is_empty() {
        canary.push(selected[0].clone());
    }
    let rest: Vec<String> = selected.iter().filter(|h| !canary.contains(h)).cloned().collect();
    let mut out = vec![canary];
    match options.strategy {
        Strategy::Waves => out.extend(rest.chunks(options.wave_size.max(1)).map(<[String]>::to_vec)),
        _ => {
            if !rest.is_empty() {
                out.push(rest);
            }
        }
    }
    out
}

/// Calls `f` on every item, at most `max` at a time (at least one).
pub fn in_parallel<T: Sync>(items: &[T], max: usize, f: impl Fn(&T) + Sync) {
    let queue = Mutex::new(items.iter());
    std::thread::scope(|s| {
        for _ in 0..max.max(1).min(items.len()) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                    let Some(item) = next else { break };
                    f(item);
                }
            });
        }
    });
}

/// Runs a deploy of `selected` hosts.
pub struct Deployer<'a> {
    /// Nix.
    pub nix: &'a Nix,
    /// The inventory.
    pub inventory: &'a Inventory,
    /// The planner.
    pub planner: &'a dyn Planner,
    /// Options.
    pub options: &'a DeployOptions,
    /// Progress.
    pub bus: Bus,
    /// The history (none: not recorded).
    pub history: Option<&'a Mutex<History>>,
}

impl Deployer<'_> {
    /// Builds and deploys; always returns a report of every host.
    ///
    /// # Errors
    /// Only failures before any host is touched: the flake does not
    /// evaluate, the history cannot be written.
    pub fn run(&self, selected: &[String]) -> Result<RunReport, DeployError> {
        let run_id = new_run_id();
        let start = Instant::now();
        let started_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if let Some(h) = self.history {
            h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).start_run(
                &run_id,
                &self.inventory.flake,
                self.options.strategy.as_str(),
                selected,
                started_at,
            )?;
        }
        for host in selected {
            self.bus.send(host, EventKind::Phase(Phase::Build));
        }
        let results: Mutex<BTreeMap<String, HostReport>> = Mutex::new(BTreeMap::new());
        let failures = AtomicUsize::new(0);
        let record = |report: HostReport| -> Result<(), DeployError> {
            if !report.outcome.is_ok() {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(h) = self.history {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record_host(&run_id, &report, now)?;
            }
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(report.host.clone(), report);
            Ok(())
        };
        // Hosts' shared connections log in ahead of their turn, from the
        // start of the build on (crate::ahead).
        let order = waves(selected, self.options).concat();
        let window = AHEAD_WINDOW.max(2 * self.options.max_parallel);
        let ahead = Ahead::new(self.inventory, &order, &self.options.timeouts, window);
        let history_error = std::thread::scope(|s| -> Result<Option<DeployError>, DeployError> {
            s.spawn(|| ahead.open(&order, self.options.max_parallel));
            let _stop = StopOnDrop(&ahead);
            // The planner evaluates what it needs for every host while the
            // systems build (one evaluation for the fleet, overlapped).
            let built = std::thread::scope(|s| {
                s.spawn(|| self.planner.prepare(&self.inventory.flake, selected));
                build::build(self.nix, &self.inventory.flake, selected, self.options.max_parallel)
            })?;
            for (host, why) in &built.failed {
                // Its login ahead (if made) closes and leaves room in the window.
                drop(ahead.take(host));
                let report = HostReport::untouched(host, Outcome::Failed, format!("{why}; nothing was pushed"));
                self.bus.send(
                    host,
                    EventKind::Finished {
                        ok: false,
                        summary: format!("failed: {}", report.message.lines().next().unwrap_or_default()),
                    },
                );
                record(report)?;
            }
            let buildable: Vec<String> = selected.iter().filter(|h| built.systems.contains_key(*h)).cloned().collect();
            let closures = FleetClosures::new(built.systems.values().cloned().collect());
            let plan = waves(&buildable, self.options);
            let mut history_error = None;
            for (index, wave) in plan.iter().enumerate() {
                let stop = self.stop_reason(index, &plan, &results, &failures);
                if let Some(reason) = stop {
                    ahead.stop();
                    for host in wave {
                        self.bus.send(host, EventKind::Finished { ok: false, summary: format!("skipped: {reason}") });
                        record(HostReport::untouched(
                            host,
                            Outcome::Skipped,
                            format!("{reason}; nothing was done (retry with `fleetgate deploy --resume`)"),
                        ))?;
                    }
                    continue;
                }
                for host in wave {
                    self.bus.send(host, EventKind::Phase(Phase::Queued));
                }
                let errors = Mutex::new(Vec::new());
                in_parallel(wave, self.options.max_parallel, |name| {
                    let report = if self.options.max_failures.is_some_and(|m| failures.load(Ordering::SeqCst) >= m) {
                        let why = format!("--max-failures {} reached", self.options.max_failures.unwrap_or_default());
                        self.bus.send(name, EventKind::Finished { ok: false, summary: format!("skipped: {why}") });
                        HostReport::untouched(name, Outcome::Skipped, format!("{why}; nothing was done"))
                    } else {
                        let (Some(host), Some(system)) = (self.inventory.hosts.get(name), built.systems.get(name))
                        else {
                            return;
                        };
                        deploy_host(&HostJob {
                            host,
                            flake: &self.inventory.flake,
                            system,
                            run_id: &run_id,
                            options: self.options,
                            planner: self.planner,
                            nix: self.nix,
                            bus: self.bus.clone(),
                            run_start: start,
                            ahead: Some(&ahead),
                            closures: Some(&closures),
                        })
                    };
                    if let Err(e) = record(report) {
                        errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e);
                    }
                });
                if let Some(e) =
                    errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).into_iter().next()
                {
                    history_error = Some(e);
                }
            }
            Ok(history_error)
        })?;
        let mut results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hosts: Vec<HostReport> = selected.iter().filter_map(|h| results.remove(h)).collect();
        let report = RunReport {
            format: crate::report::FORMAT,
            run_id,
            flake: self.inventory.flake.clone(),
            strategy: self.options.strategy.as_str().to_owned(),
            started_at,
            duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            exit_code: exit_code(&hosts),
            hosts,
        };
        if let Some(h) = self.history {
            h.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish_run(&report)?;
        }
        match history_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    fn stop_reason(
        &self,
        index: usize,
        plan: &[Vec<String>],
        results: &Mutex<BTreeMap<String, HostReport>>,
        failures: &AtomicUsize,
    ) -> Option<String> {
        if index == 0 {
            return None;
        }
        let results = results.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.options.strategy != Strategy::All {
            let canary_failed: Vec<&str> = plan[0]
                .iter()
                .filter(|h| results.get(*h).is_some_and(|r| !r.outcome.is_ok()))
                .map(String::as_str)
                .collect();
            if !canary_failed.is_empty() {
                return Some(format!("the canary ({}) failed", canary_failed.join(", ")));
            }
        }
        match self.options.max_failures {
            Some(m) if failures.load(Ordering::SeqCst) >= m => Some(format!("--max-failures {m} reached")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn waves_follow_the_strategy() {
        let hosts = names(&["a", "b", "c", "d", "e"]);
        let mut o = DeployOptions::default();
        assert_eq!(waves(&hosts, &o), vec![hosts.clone()]);
        o.strategy = Strategy::Canary;
        assert_eq!(waves(&hosts, &o), vec![names(&["a"]), names(&["b", "c", "d", "e"])]);
        o.canary = names(&["c", "x"]);
        assert_eq!(waves(&hosts, &o), vec![names(&["c"]), names(&["a", "b", "d", "e"])]);
        o.strategy = Strategy::Waves;
        o.wave_size = 3;
        assert_eq!(waves(&hosts, &o), vec![names(&["c"]), names(&["a", "b", "d"]), names(&["e"])]);
    }
}
