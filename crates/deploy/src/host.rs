//! One host's deploy, start to end: lock → facts → plan → copy → activate
//! (live switch with magic rollback, or verified reboot) → record. Every
//! way out says where the host is ([`Standing`]) and why.

use std::time::Instant;

use fleetgate_facts::Facts;
use fleetgate_nix::Nix;

use crate::bootonce::BootOnce;
use crate::copy;
use crate::events::{Bus, EventKind, Phase, Timeline};
use crate::health;
use crate::inventory::Host;
use crate::lock::{self, LockError};
use crate::options::DeployOptions;
use crate::plan::{Action, PlanInput, Planner};
use crate::reboot::{self, RebootOutcome, RebootPlan};
use crate::remote::{Target, generation_number, paths, q, why};
use crate::report::{HostReport, Outcome, Standing};
use crate::switch::{self, SwitchOutcome, Watchdog};

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
}

/// The profile generation that holds `system`: the profile's own if it
/// points there, else the newest generation that does.
#[must_use]
pub fn generation_of(facts: &Facts, system: &str) -> Option<u64> {
    if let Some(p) = &facts.profile {
        if p.path == system {
            if let Some(n) = generation_number(&p.link) {
                return Some(n);
            }
        }
    }
    facts.generations.iter().filter(|g| g.path == system).map(|g| g.number).max()
}

struct Run<'j, 'a> {
    job: &'j HostJob<'a>,
    tl: Timeline,
    report: HostReport,
}

impl Run<'_, '_> {
    fn finish(mut self, outcome: Outcome, standing: Standing, message: impl Into<String>) -> HostReport {
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
        self.report
    }
}

/// Deploys one host.
pub fn deploy_host(job: &HostJob<'_>) -> HostReport {
    let host = job.host;
    let t = &job.options.timeouts;
    let mut run = Run {
        job,
        tl: Timeline::new(&host.name, job.bus.clone(), job.run_start),
        report: HostReport {
            new_system: Some(job.system.to_owned()),
            ..HostReport::untouched(&host.name, Outcome::Failed, "")
        },
    };
    let mut target = Target::new(host, t);

    run.tl.start(Phase::Lock);
    match lock::acquire(&mut target, job.run_id, t.command) {
        Ok(()) => {}
        Err(LockError::Held { owner }) => {
            let e = LockError::Held { owner };
            return run.finish(Outcome::Failed, Standing::KnownGood, format!("{e}; nothing was done"));
        }
        Err(LockError::Transport(e)) if e.is_unreachable() => {
            return run.finish(
                Outcome::Unreachable,
                Standing::KnownGood,
                format!("{}; nothing was done (retry with `fleetgate deploy --resume`)", why(&e)),
            );
        }
        Err(LockError::Transport(e)) => {
            return run.finish(
                Outcome::Unreachable,
                Standing::KnownGood,
                format!("could not take the deploy lock: {}; nothing was done", why(&e)),
            );
        }
    }
    let report = deploy_locked(&mut run, &mut target);
    let _ = lock::release(&mut target, job.run_id, t.command);
    report.unwrap_or_else(|(outcome, standing, message)| run.finish(outcome, standing, message))
}

type Fail = (Outcome, Standing, String);

fn deploy_locked(run: &mut Run<'_, '_>, target: &mut Target<'_>) -> Result<HostReport, Fail> {
    let job = run.job;
    let t = &job.options.timeouts;
    let new = job.system;

    run.tl.start(Phase::Facts);
    let facts = fleetgate_facts::collect(target.shared(), t.facts).map_err(|e| {
        (Outcome::Unreachable, Standing::KnownGood, format!("gathering facts failed: {e}; nothing was done"))
    })?;
    let old = facts.current_system.as_ref().map(|s| s.path.clone());
    run.report.previous_system.clone_from(&old);
    run.report.running_system.clone_from(&old);

    run.tl.start(Phase::Plan);
    let plan = job.planner.plan(&PlanInput {
        flake: job.flake,
        host: &job.host.name,
        system: std::path::Path::new(new),
        facts: &facts,
    });
    run.report.action = Some(plan.action);
    run.report.findings.clone_from(&plan.findings);
    let action = match plan.action {
        Action::UpToDate => {
            return Err((Outcome::UpToDate, Standing::KnownGood, plan.next_step));
        }
        Action::Blocked if !job.options.force => {
            return Err((
                Outcome::Blocked,
                Standing::KnownGood,
                format!("the plan is blocked, nothing was pushed. {}", plan.next_step),
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
    if job.options.dry_run {
        return Err((Outcome::Skipped, Standing::KnownGood, format!("dry run: would {}", action.as_str())));
    }
    let Some(old) = old else {
        return Err((
            Outcome::Failed,
            Standing::KnownGood,
            "the host has no /run/current-system: is it NixOS? nothing was done".to_owned(),
        ));
    };
    let old_generation = generation_of(&facts, &old);
    let boot_id = facts.boot_id.clone().unwrap_or_default();
    let baseline = health::system_state(target.shared(), t.command);

    run.tl.start(Phase::Copy);
    let copy_job = copy::CopyJob {
        nix: job.nix,
        host: job.host,
        system: new,
        substitute_on_destination: job.options.substitute_on_destination,
        free_bytes: facts.nix_free_bytes,
        timeout: t.copy,
        bus: &job.bus,
    };
    let copied = copy::copy(&copy_job, &mut copy::TargetProbe { target, timeout: t.command })
        .map_err(|m| (Outcome::Failed, Standing::KnownGood, m))?;
    run.report.copied_bytes = Some(copied.bytes);

    match action {
        Action::Switch => {
            let w = Watchdog {
                dir: format!("{}/runs/{}", paths::RUN_DIR, job.run_id),
                profile: paths::PROFILE.to_owned(),
                new: new.to_owned(),
                old: old.clone(),
                old_generation,
                window_secs: t.confirm.as_secs().max(5),
                activation_secs: t.activation.as_secs().max(10),
            };
            match switch::magic_switch(target, &mut run.tl, &w, job.run_id, &baseline, &boot_id) {
                SwitchOutcome::Confirmed => {
                    run.report.running_system = Some(new.to_owned());
                    record(run, target, false);
                    Ok(finish(
                        run,
                        Outcome::Deployed,
                        Standing::KnownGood,
                        "switched live, healthy, confirmed, and the boot default",
                    ))
                }
                SwitchOutcome::RolledBack(why) => {
                    run.report.rolled_back = true;
                    Err((
                        Outcome::Failed,
                        Standing::KnownGood,
                        format!("{why}. The host runs the previous generation."),
                    ))
                }
                SwitchOutcome::Unknown(why) => {
                    run.report.running_system = None;
                    Err((Outcome::Failed, Standing::Unknown, why))
                }
            }
        }
        _ => {
            let p = RebootPlan {
                run_id: job.run_id.to_owned(),
                new: new.to_owned(),
                old: old.clone(),
                old_generation,
                boot_id,
                baseline,
                once: BootOnce::for_host(&facts.boot),
                allow_unverified: job.options.allow_unverified_reboot,
                power_cycle_attempts: job.options.power_cycle_attempts,
            };
            match reboot::verified_reboot(target, &mut run.tl, &p) {
                RebootOutcome::Blessed => {
                    run.report.running_system = Some(new.to_owned());
                    run.report.booted_healthy = Some(new.to_owned());
                    record(run, target, true);
                    Ok(finish(
                        run,
                        Outcome::Deployed,
                        Standing::KnownGood,
                        "booted the new generation once, healthy, now the default",
                    ))
                }
                RebootOutcome::Refused(why) => Err((
                    Outcome::Failed,
                    Standing::KnownGood,
                    format!("{why}. The host runs the previous generation."),
                )),
                RebootOutcome::RolledBack(why) => {
                    run.report.rolled_back = true;
                    Err((Outcome::Failed, Standing::KnownGood, format!("{why}. Nothing is left to repair by hand.")))
                }
                RebootOutcome::Unknown(why) => {
                    run.report.running_system = None;
                    Err((Outcome::Failed, Standing::Unknown, why))
                }
            }
        }
    }
}

fn finish(run: &mut Run<'_, '_>, outcome: Outcome, standing: Standing, message: &str) -> HostReport {
    let taken = Run {
        job: run.job,
        tl: std::mem::replace(&mut run.tl, Timeline::new("", Bus::silent(), run.job.run_start)),
        report: run.report.clone(),
    };
    taken.finish(outcome, standing, message)
}

/// Keeps the last generation that booted healthy from garbage collection.
fn record(run: &mut Run<'_, '_>, target: &mut Target<'_>, booted: bool) {
    run.tl.start(Phase::Record);
    if booted {
        let script = format!(
            "mkdir -p {dir} && ln -sfn {new} {link}.tmp && mv -Tf {link}.tmp {link}",
            dir = paths::GCROOTS,
            new = q(run.job.system),
            link = paths::LAST_GOOD
        );
        if let Err(e) = target.sh_ok(&script, run.job.options.timeouts.command) {
            run.tl.info(format!("could not write the last-good GC root: {}", why(&e)));
        }
    }
}
