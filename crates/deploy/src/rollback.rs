//! `fleetgate rollback`: each host back to its last known-good generation —
//! the one its last verified reboot proved (the host's own GC root
//! `/nix/var/nix/gcroots/fleetgate/last-good`, else the history's record) —
//! through the same engine as a deploy: a pending reboot of a dead run is
//! finished first; a generation the host booted from is switched to live
//! (with magic rollback); any other boots once and is verified, with the
//! booted generation as the fallback.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fleetgate_apply::opening::Opening;
use fleetgate_apply::scripts::{LAST_GOOD, Layout};

use crate::error::DeployError;
use crate::events::Bus;
use crate::fleet::{in_parallel, new_run_id};
use crate::history::History;
use crate::host::{
    Fail, HostJob, Run, apply, choose_fallback, conclude, facts_and_baseline, host_state, on_locked_host,
    resolve_pending,
};
use crate::inventory::Inventory;
use crate::options::DeployOptions;
use crate::plan::{Action, Plan, PlanInput, Planner};
use crate::remote::Machine;
use crate::report::{HostReport, Outcome, RunReport, Standing, exit_code};

/// A rollback needs no plan of its own: the target generation already ran
/// on the host.
struct NoPlanner;

impl Planner for NoPlanner {
    fn plan(&self, _: &PlanInput<'_>) -> Plan {
        Plan { action: Action::Boot, reboot_needed: false, findings: Vec::new(), next_step: String::new() }
    }
}

fn rollback_locked(run: &mut Run<'_, '_>, m: &mut Machine, opening: Opening) -> Result<Fail, Fail> {
    let t = &run.job.options.timeouts;
    let stale = resolve_pending(run, m, opening.intent.clone())?;
    let script = format!("{}[ -e {LAST_GOOD} ] && readlink -f {LAST_GOOD} || true\n", Layout::default().tools(&[]));
    let on_host = m
        .sh_ok("reading the last-good generation", &script, t.command)
        .map_err(|e| (Outcome::Unreachable, Standing::KnownGood, format!("{}; nothing was done", e.line())))?;
    let target = match (on_host.trim(), run.job.system) {
        ("", "") => {
            return Err((
                Outcome::Failed,
                Standing::KnownGood,
                "no known-good generation is recorded for this host (neither its GC root nor the history has one); nothing was done"
                    .to_owned(),
            ));
        }
        ("", recorded) => recorded.to_owned(),
        (host, _) => host.to_owned(),
    };
    run.report.new_system = Some(target.clone());

    let (facts, baseline) = facts_and_baseline(run, m, opening, stale)?;
    let Some(current) = facts.current_system.as_ref().map(|s| s.path.clone()) else {
        return Err((
            Outcome::Failed,
            Standing::KnownGood,
            "the host has no /run/current-system; nothing was done".into(),
        ));
    };
    run.report.previous_system = Some(current.clone());
    run.report.running_system = Some(current.clone());
    if !facts.generations.iter().any(|g| g.path == target) && current != target {
        return Err((
            Outcome::Failed,
            Standing::KnownGood,
            format!(
                "the last known-good generation {target} is no longer in the host's system profile; nothing was done"
            ),
        ));
    }
    let state = host_state(&facts, &current);
    if state.current == target && state.profile == target {
        run.report.action = Some(Action::UpToDate);
        return Err((Outcome::UpToDate, Standing::KnownGood, "the host is on its last known-good generation".into()));
    }
    // Booted from it: switching back live is the rollback (it ran here);
    // otherwise it boots once, verified, the booted generation the fallback.
    let fallback = if state.booted == target {
        run.report.action = Some(Action::Switch);
        None
    } else {
        run.report.action = Some(Action::Boot);
        Some(choose_fallback(run, &facts, &state, &target)?)
    };
    let outcome = apply(run, m, &facts, &state, &target, fallback, baseline);
    Ok(conclude(run, m, &outcome, &target))
}

/// Rolls `selected` hosts back, at most `max_parallel` at a time; records
/// the run in `history` (strategy `rollback`).
///
/// # Errors
/// The history cannot be written.
pub fn rollback(
    nix: &fleetgate_nix::Nix,
    inventory: &Inventory,
    selected: &[String],
    options: &DeployOptions,
    bus: &Bus,
    history: Option<&Mutex<History>>,
) -> Result<RunReport, DeployError> {
    let run_id = new_run_id();
    let start = Instant::now();
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let started_at = now();
    let mut recorded = std::collections::BTreeMap::new();
    if let Some(h) = history {
        let h = locked(h);
        h.start_run(&run_id, &inventory.flake, "rollback", selected, started_at)?;
        for name in selected {
            if let Some(system) = h.last_good(name)? {
                recorded.insert(name.clone(), system);
            }
        }
    }
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    in_parallel(selected, options.max_parallel, |name| {
        let Some(host) = inventory.hosts.get(name) else { return };
        let job = HostJob {
            host,
            flake: &inventory.flake,
            system: recorded.get(name).map_or("", String::as_str),
            run_id: &run_id,
            options,
            planner: &NoPlanner,
            nix,
            bus: bus.clone(),
            run_start: start,
            ahead: None,
            closures: None,
        };
        let report = on_locked_host(&job, rollback_locked, false);
        if let Some(h) = history {
            if let Err(e) = locked(h).record_host(&run_id, &report, now()) {
                errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(e);
            }
        }
        results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(report);
    });
    let mut by_host = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let hosts: Vec<HostReport> = selected
        .iter()
        .filter_map(|n| by_host.iter().position(|r| &r.host == n).map(|i| by_host.swap_remove(i)))
        .collect();
    let report = RunReport {
        format: crate::report::FORMAT,
        run_id,
        flake: inventory.flake.clone(),
        strategy: "rollback".to_owned(),
        started_at,
        duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        exit_code: exit_code(&hosts),
        hosts,
    };
    if let Some(h) = history {
        locked(h).finish_run(&report)?;
    }
    match errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

fn locked(h: &Mutex<History>) -> std::sync::MutexGuard<'_, History> {
    h.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
