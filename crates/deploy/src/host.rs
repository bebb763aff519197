//! One host's deploy, start to end: lock → a pending verified reboot of a
//! dead run resolved first → facts → plan → copy → the apply engine (live
//! switch with magic rollback, or verified reboot) → record. Every way out
//! says where the host is ([`Standing`]) and why.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use fleetgate_apply::intent::{PendingIntent, Verified};
use fleetgate_apply::machine::{HostState, LockError, Machine as _, MachineError};
use fleetgate_apply::opening::{Opening, Release};
use fleetgate_apply::reboot::{RebootPlan, fallback_for, resume, verified_reboot};
use fleetgate_apply::scripts::{LOCK, Layout};
use fleetgate_apply::switch::{SwitchPlan, live_switch};
use fleetgate_facts::{Facts, Finding, Severity};
use fleetgate_nix::Nix;

use crate::ahead::Ahead;
use crate::copy;
use crate::events::{Bus, EventKind, Phase, Timeline};
use crate::inventory::Host;
use crate::options::DeployOptions;
use crate::plan::{Action, PlanInput, Planner};
use crate::remote::{self, Machine, Progress};
use crate::report::{HostReport, Outcome, Standing};

/// Everything one host's deploy needs.
pub struct HostJob<'a> {
    /// The host.
    pub host: &'a Host,
    /// The flake.
    pub flake: &'a str,
    /// The new system (built, in the local store).
    pub system: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// Options.
    pub options: &'a DeployOptions,
    /// The planner.
    pub planner: &'a dyn Planner,
    /// Nix, for the copy.
    pub nix: &'a Nix,
    /// Progress.
    pub bus: Bus,
    /// When the run started.
    pub run_start: Instant,
    /// Connections logged in ahead of the host's turn (none: log in now).
    pub ahead: Option<&'a Ahead>,
    /// The run's closures, read once for every host (none: Nix is asked per host).
    pub closures: Option<&'a copy::FleetClosures>,
}

/// The profile generation that holds `system`: the profile's own if it
/// points there, else the newest generation that does.
#[must_use]
pub fn generation_of(facts: &Facts, system: &str) -> Option<u64> {
    if let Some(p) = &facts.profile {
        if p.path == system {
            if let Some(n) = fleetgate_apply::remote::generation_number(&p.link) {
                return Some(n);
            }
        }
    }
    facts.generations.iter().filter(|g| g.path == system).map(|g| g.number).max()
}

/// One host's run in progress: its job, timeline and report so far.
pub(crate) struct Run<'j, 'a> {
    /// Whether this run holds the host's deploy lock (to release at the end).
    pub(crate) locked: bool,
    pub(crate) job: &'j HostJob<'a>,
    pub(crate) tl: Timeline,
    pub(crate) report: HostReport,
}

/// How a host's run ends: outcome, standing, message.
pub(crate) type Fail = (Outcome, Standing, String);

impl Run<'_, '_> {
    fn finish(&mut self, outcome: Outcome, standing: Standing, message: impl Into<String>) -> HostReport {
        let message = message.into();
        self.tl.end(outcome.is_ok(), &message);
        self.report.outcome = outcome;
        self.report.standing = standing;
        self.report.message = message;
        self.report.phases = std::mem::take(&mut self.tl.records);
        self.job.bus.send(
            &self.job.host.name,
            EventKind::Finished {
                ok: outcome.is_ok(),
                summary: format!("{}: {}", outcome.as_str(), self.report.message.lines().next().unwrap_or_default()),
            },
        );
        self.report.clone()
    }
}

/// Deploys one host.
pub fn deploy_host(job: &HostJob<'_>) -> HostReport {
    on_locked_host(job, deploy_locked, true)
}

/// What runs on a host once it is locked, given what the opening round trip
/// read: the outcome, standing and message.
pub(crate) type LockedBody = fn(&mut Run<'_, '_>, &mut Machine, Opening) -> Result<Fail, Fail>;

/// Connects, takes the deploy lock and reads the pending intent, the health
/// baseline and the facts in the same round trip ([`Machine::open`]), runs
/// `body`, releases the lock, reports. With `release_up_to_date`, a host
/// already on the job's system has its lock released by that same round
/// trip (the body takes it again if it acts: [`relock`]).
pub(crate) fn on_locked_host(job: &HostJob<'_>, body: LockedBody, release_up_to_date: bool) -> HostReport {
    let host = job.host;
    let t = &job.options.timeouts;
    let mut run = Run {
        locked: false,
        job,
        tl: Timeline::new(&host.name, job.bus.clone(), job.run_start),
        report: HostReport {
            new_system: Some(job.system.to_owned()),
            ..HostReport::untouched(&host.name, Outcome::Failed, "")
        },
    };
    let conn = match job.ahead.and_then(|a| a.take(&host.name)) {
        Some(conn) => conn,
        None => match host.ssh_target() {
            Ok(target) => remote::connector(host, target, t),
            Err(e) => return run.finish(Outcome::Failed, Standing::KnownGood, format!("{e}; nothing was done")),
        },
    };
    let mut m = remote::machine(host, conn, t);

    let release = release_up_to_date.then_some(Release { system: job.system, booted: job.options.reboot });
    let result = match open(&mut run, &mut m, release) {
        Ok(opening) => body(&mut run, &mut m, opening),
        Err(fail) => Err(fail),
    };
    if run.locked {
        let _ = m.unlock(job.run_id);
    }
    match result {
        Ok((outcome, standing, message)) | Err((outcome, standing, message)) => run.finish(outcome, standing, message),
    }
}

/// The opening round trip: the lock, and what the deploy decides on.
fn open(run: &mut Run<'_, '_>, m: &mut Machine, release: Option<Release<'_>>) -> Result<Opening, Fail> {
    let job = run.job;
    run.tl.start(Phase::Lock);
    match m.open(job.run_id, fleetgate_facts::SCRIPT, job.options.timeouts.facts, release) {
        Ok(opening) => {
            run.locked = !opening.released;
            Ok(opening)
        }
        Err(LockError::Held { owner }) => Err((
            Outcome::Failed,
            Standing::KnownGood,
            format!(
                "another deploy holds the lock on this host ({owner}); wait for it to finish — if it died, remove {LOCK} on the host; nothing was done"
            ),
        )),
        Err(LockError::Machine(MachineError::Lost(e))) => Err((
            Outcome::Unreachable,
            Standing::KnownGood,
            format!("{e}; nothing was done (retry with `fleetgate deploy --resume`)"),
        )),
        Err(LockError::Machine(e)) => Err((
            Outcome::Unreachable,
            Standing::KnownGood,
            format!("could not take the deploy lock: {}; nothing was done", e.line()),
        )),
    }
}

/// The opening released the lock (the host looked up to date to it) but the
/// plan acts: take the lock again and read everything afresh — what was read
/// without the lock held since decides nothing.
fn relock(run: &mut Run<'_, '_>, m: &mut Machine) -> Result<Opening, Fail> {
    run.tl.info("the host is not up to date after all: taking the deploy lock again");
    open(run, m, None)
}

/// A verified reboot left pending by a run that died (`intent`, as the
/// opening read it): finish it first. `Ok(true)`: one was finished, so what
/// the opening read of the host is stale.
pub(crate) fn resolve_pending(
    run: &mut Run<'_, '_>,
    m: &mut Machine,
    intent: Result<Option<PendingIntent>, MachineError>,
) -> Result<bool, Fail> {
    let t = &run.job.options.timeouts;
    let intent = match intent {
        Ok(None) => return Ok(false),
        Ok(Some(i)) => i,
        Err(MachineError::Lost(e)) => {
            return Err((Outcome::Unreachable, Standing::KnownGood, format!("{e}; nothing was done")));
        }
        Err(e) => {
            return Err((
                Outcome::Failed,
                Standing::Unknown,
                format!(
                    "a pending verified reboot cannot be read ({}): check the host, then remove {} on it; nothing was done",
                    e.line(),
                    fleetgate_apply::intent::PATH
                ),
            ));
        }
    };
    run.tl.info(format!("run {} left a verified reboot pending; finishing it first", intent.run_id));
    let outcome = resume(m, &mut Progress::new(&mut run.tl), &intent, t.health, false, t.reboot);
    let line = format!("the pending verified reboot of run {}: {}", intent.run_id, outcome.message());
    if outcome.standing() == fleetgate_apply::Standing::Unknown {
        return Err((Outcome::Failed, Standing::Unknown, format!("{line}; nothing else was done")));
    }
    run.tl.info(&line);
    let severity = if outcome.is_applied() { Severity::Info } else { Severity::Warning };
    run.report.findings.push(Finding::new("deploy.pending-resolved", severity, line));
    if outcome == fleetgate_apply::Outcome::Blessed {
        run.report.booted_healthy = Some(intent.new.clone());
        record_last_good(run, m, &intent.new);
    }
    Ok(true)
}

/// The host's facts and health baseline: as the opening read them, or read
/// again when `stale` (a pending reboot was finished since).
pub(crate) fn facts_and_baseline(
    run: &mut Run<'_, '_>,
    m: &mut Machine,
    opening: Opening,
    stale: bool,
) -> Result<(Facts, String), Fail> {
    run.tl.start(Phase::Facts);
    let (facts, baseline) = if stale {
        let facts = fleetgate_facts::collect(m.transport(), run.job.options.timeouts.facts).map_err(|e| {
            (Outcome::Unreachable, Standing::KnownGood, format!("gathering facts failed: {e}; nothing was done"))
        })?;
        (facts, m.system_state())
    } else {
        let target = m.transport().describe();
        let extra = opening.extra;
        (fleetgate_facts::from_output(&target, &extra.stdout, extra.status, &extra.stderr), opening.system_state)
    };
    remote::configure_loader(m, &facts);
    Ok((facts, baseline))
}

fn deploy_locked(run: &mut Run<'_, '_>, m: &mut Machine, opening: Opening) -> Result<Fail, Fail> {
    let job = run.job;
    let t = &job.options.timeouts;
    let new = job.system;

    let released = opening.released;
    let stale = resolve_pending(run, m, opening.intent.clone())?;
    let (facts, baseline) = facts_and_baseline(run, m, opening, stale)?;
    let old = facts.current_system.as_ref().map(|s| s.path.clone());
    run.report.previous_system.clone_from(&old);
    run.report.running_system.clone_from(&old);

    run.tl.start(Phase::Plan);
    let plan = job.planner.plan(&PlanInput {
        flake: job.flake,
        host: &job.host.name,
        system: std::path::Path::new(new),
        facts: &facts,
        reboot: job.options.reboot,
    });
    if released && plan.action != Action::UpToDate {
        let fresh = relock(run, m)?;
        return deploy_locked(run, m, fresh);
    }
    run.report.action = Some(plan.action);
    run.report.findings.extend(plan.findings.iter().cloned());
    let action = match plan.action {
        Action::UpToDate => return Err((Outcome::UpToDate, Standing::KnownGood, plan.next_step)),
        Action::Blocked if job.options.dry_run => {
            return Err((Outcome::Blocked, Standing::KnownGood, format!("dry run: blocked. {}", plan.next_step)));
        }
        Action::Blocked if !job.options.force => {
            return Err((
                Outcome::Blocked,
                Standing::KnownGood,
                "the plan is blocked, nothing was pushed (see the findings below)".to_owned(),
            ));
        }
        Action::Blocked => {
            run.tl.info("the plan is blocked; deploying anyway (--force)");
            if plan.reboot_needed { Action::Boot } else { Action::Switch }
        }
        a => a,
    };
    let action = if job.options.reboot { Action::Boot } else { action };
    run.report.action = Some(action);
    let Some(old) = old else {
        return Err((
            Outcome::Failed,
            Standing::KnownGood,
            "the host has no /run/current-system: is it NixOS? nothing was done".to_owned(),
        ));
    };
    let state = host_state(&facts, &old);
    let fallback = if action == Action::Boot { Some(choose_fallback(run, &facts, &state, new)?) } else { None };
    if job.options.dry_run {
        let how = match (action, &fallback) {
            (Action::Boot, Some(f)) => {
                format!("boot {new} once with a verified reboot (fallback: {})", short(f))
            }
            _ => "switch live with magic rollback".to_owned(),
        };
        return Err((Outcome::Planned, Standing::KnownGood, format!("dry run: would {how}. {}", plan.next_step)));
    }
    run.tl.start(Phase::Copy);
    let copy_job = copy::CopyJob {
        nix: job.nix,
        host: job.host,
        system: new,
        substitute_on_destination: job.options.substitute_on_destination,
        free_bytes: facts.nix_free_bytes,
        timeout: t.copy,
        bus: &job.bus,
        closures: job.closures,
    };
    let copied = copy::copy(&copy_job, &mut copy::TargetProbe { machine: m, timeout: t.command })
        .map_err(|msg| (Outcome::Failed, Standing::KnownGood, msg))?;
    run.report.copied_bytes = Some(copied.bytes);

    let outcome = apply(run, m, &facts, &state, new, fallback, baseline);
    Ok(conclude(run, m, &outcome, new))
}

/// Where the facts say the host stands.
pub fn host_state(facts: &Facts, current: &str) -> HostState {
    HostState {
        current: current.to_owned(),
        booted: facts.booted_system.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
        profile: facts.profile.as_ref().map(|p| p.path.clone()).unwrap_or_default(),
        profile_generation: None,
        boot_id: facts.boot_id.clone().unwrap_or_default(),
    }
}

/// Runs the engine: a live switch from the running system (no fallback), or
/// a verified reboot into `new` that falls back to `fallback`.
pub(crate) fn apply(
    run: &mut Run<'_, '_>,
    m: &mut Machine,
    facts: &Facts,
    state: &HostState,
    new: &str,
    fallback: Option<String>,
    baseline: String,
) -> fleetgate_apply::Outcome {
    let job = run.job;
    let t = &job.options.timeouts;
    match fallback {
        None => {
            let p = SwitchPlan {
                run_id: job.run_id.to_owned(),
                new: new.to_owned(),
                old_generation: generation_of(facts, &state.current),
                old: state.current.clone(),
                boot_id: state.boot_id.clone(),
                baseline,
                window: t.confirm.max(std::time::Duration::from_secs(5)),
                activation: t.activation.max(std::time::Duration::from_secs(10)),
                health: t.health,
            };
            live_switch(m, &mut Progress::new(&mut run.tl), &p)
        }
        Some(fallback) => {
            let p = RebootPlan {
                run_id: job.run_id.to_owned(),
                new: new.to_owned(),
                fallback_generation: generation_of(facts, &fallback),
                fallback,
                boot_id: state.boot_id.clone(),
                verified: Verified {
                    booted: new.to_owned(),
                    units: job.host.health.units.clone(),
                    commands: job.host.health.commands.clone(),
                    baseline,
                    // The deployer's TCP probes run from the deployer, not the host.
                    tcp: Vec::new(),
                },
                allow_unverified: job.options.allow_unverified_reboot,
                power_cycle_attempts: job.options.power_cycle_attempts,
                reboot_within: t.reboot,
                health_within: t.health,
                now_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            };
            verified_reboot(m, &mut Progress::new(&mut run.tl), &p)
        }
    }
}

/// The fallback of a verified reboot: the generation that booted on this
/// hardware. One that never booted is refused unless `--force` (fleetgate
/// cannot see its initrd from here: "cannot judge" is not "fine").
pub(crate) fn choose_fallback(
    run: &mut Run<'_, '_>,
    facts: &Facts,
    state: &HostState,
    new: &str,
) -> Result<String, Fail> {
    match bootable_fallback(facts, state, new) {
        Ok(f) => Ok(f),
        Err(NoFallback { candidate: Some(f), .. }) if run.job.options.force => {
            run.tl.info(format!("the fallback {} is not known to boot on this host; going on (--force)", short(&f)));
            Ok(f)
        }
        Err(NoFallback { why, .. }) => {
            let finding = Finding::new(
                "reboot.no-bootable-fallback",
                Severity::Error,
                format!("no fallback known to boot for the verified reboot: {why}"),
            )
            .with_fix("boot a known-good generation first (`fleetgate rollback`), or deploy with --force");
            run.report.findings.push(finding);
            run.report.action = Some(Action::Blocked);
            Err((
                Outcome::Blocked,
                Standing::KnownGood,
                format!("the verified reboot has no fallback known to boot ({why}); nothing was pushed"),
            ))
        }
    }
}

/// Why a verified reboot has no fallback known to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoFallback {
    /// The generation it would fall back to (`--force` takes it).
    pub candidate: Option<String>,
    /// Why that is not known to boot.
    pub why: String,
}

/// The fallback of a verified reboot into `new`: the generation that booted
/// on this hardware (`/run/booted-system`), provided it still has a boot
/// entry (it is in the system profile).
///
/// # Errors
/// [`NoFallback`] when there is none, or only one that never booted here.
pub fn bootable_fallback(facts: &Facts, state: &HostState, new: &str) -> Result<String, NoFallback> {
    let booted = state.booted.as_str();
    let booted_has_entry = !booted.is_empty() && facts.generations.iter().any(|g| g.path == booted);
    match fallback_for(state, new) {
        Some(f) if f == booted && booted_has_entry => Ok(f),
        None => Err(NoFallback { candidate: None, why: "there is no other generation to fall back to".to_owned() }),
        Some(f) if f == booted => Err(NoFallback {
            why: format!(
                "the generation that booted ({}) is no longer in the system profile, so it has no boot entry",
                short(booted)
            ),
            candidate: Some(f),
        }),
        Some(f) => Err(NoFallback {
            why: format!(
                "the only fallback, {}, never booted on this host (boot debt): whether it boots cannot be judged",
                short(&f)
            ),
            candidate: Some(f),
        }),
    }
}

pub(crate) fn short(path: &str) -> &str {
    path.strip_prefix("/nix/store/").and_then(|r| r.get(33..)).unwrap_or(path)
}

pub(crate) fn conclude(run: &mut Run<'_, '_>, m: &mut Machine, outcome: &fleetgate_apply::Outcome, new: &str) -> Fail {
    use fleetgate_apply::Outcome as O;
    let new = new.to_owned();
    match outcome {
        O::Switched => {
            run.report.running_system = Some(new);
            (Outcome::Deployed, Standing::KnownGood, outcome.message())
        }
        O::Blessed => {
            run.report.running_system = Some(new.clone());
            run.report.booted_healthy = Some(new.clone());
            record_last_good(run, m, &new);
            (Outcome::Deployed, Standing::KnownGood, outcome.message())
        }
        O::Refused { .. } => (Outcome::Failed, Standing::KnownGood, outcome.message()),
        O::RolledBack { .. } => {
            run.report.rolled_back = true;
            (Outcome::Failed, Standing::KnownGood, outcome.message())
        }
        O::Unknown { .. } => {
            run.report.running_system = None;
            (Outcome::Failed, Standing::Unknown, outcome.message())
        }
    }
}

/// Keeps the last generation that booted healthy from garbage collection.
fn record_last_good(run: &mut Run<'_, '_>, m: &mut Machine, system: &str) {
    run.tl.start(Phase::Record);
    let script = Layout::default().record_last_good(system);
    if let Err(e) = m.sh_ok("writing the last-good GC root", &script, run.job.options.timeouts.command) {
        run.tl.info(format!("could not write the last-good GC root: {}", e.line()));
    }
}

#[cfg(test)]
mod tests {
    use fleetgate_facts::Generation;

    use super::*;

    fn facts(generations: &[(u64, &str)]) -> Facts {
        Facts {
            generations: generations.iter().map(|(n, p)| Generation { number: *n, path: (*p).to_owned() }).collect(),
            ..Facts::default()
        }
    }

    fn state(current: &str, booted: &str) -> HostState {
        HostState { current: current.into(), booted: booted.into(), ..HostState::default() }
    }

    #[test]
    fn the_fallback_is_the_generation_that_booted_and_still_has_an_entry() {
        let f = facts(&[(1, "/b"), (2, "/x")]);
        // Switched live to /x (never booted): the booted /b is the fallback.
        assert_eq!(bootable_fallback(&f, &state("/x", "/b"), "/n"), Ok("/b".to_owned()));
        // Booted /b was garbage-collected out of the profile: no entry, blocked.
        let gone = facts(&[(2, "/x")]);
        let e = bootable_fallback(&gone, &state("/x", "/b"), "/n").expect_err("no entry");
        assert_eq!(e.candidate.as_deref(), Some("/b"));
        assert!(e.why.contains("no longer in the system profile"), "{}", e.why);
        // The host booted the new system and runs another one live: that one never booted.
        let e = bootable_fallback(&f, &state("/x", "/n"), "/n").expect_err("never booted");
        assert!(e.why.contains("never booted") && e.candidate.as_deref() == Some("/x"), "{e:?}");
        // Nothing else at all.
        assert_eq!(bootable_fallback(&f, &state("/n", "/n"), "/n").map_err(|e| e.candidate), Err(None));
    }
}
