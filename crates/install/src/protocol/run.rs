//! The bookkeeping of one run of the protocol: what it learnt, each phase's
//! time against its deadline, the records it reports, and how a [`Stop`]
//! ends the report (the later phases `not-reached`, the resume command, the
//! console tail of a failed first boot).

use std::time::Duration;

use fleetgate_check::Report;
use fleetgate_facts::{Facts, Finding, Severity};

use super::{Observer, Plan, SystemCheck};
use crate::phase::Phase;
use crate::report::{InstallReport, PhaseRecord, PhaseResult, Standing};
use crate::stop::Stop;
use crate::target::{Target, TargetError};

/// The run: what it learnt, and the report it builds.
pub(super) struct Run<'a> {
    pub(super) target: &'a mut dyn Target,
    pub(super) check: &'a dyn SystemCheck,
    pub(super) plan: &'a Plan,
    pub(super) observer: &'a mut dyn Observer,
    pub(super) report: InstallReport,
    /// The facts the hardware is judged by (the old OS's).
    pub(super) hardware: Option<Facts>,
    pub(super) installer_kernel: Option<String>,
    pub(super) phase_start: Duration,
    pub(super) phase: Phase,
    pub(super) proof: Vec<String>,
}

/// The end of a step that may take the connection with it (the kexec, the
/// reboot): a lost connection is what success looks like then, and the wait
/// for the next boot judges what happened.
pub(super) fn may_lose_contact(step: Result<(), TargetError>) -> Result<(), TargetError> {
    match step {
        Err(TargetError::Lost(_)) => Ok(()),
        other => other,
    }
}

/// The error findings of `report`, but those whose id starts with one of
/// `judged_elsewhere`.
pub(super) fn blocking(report: &Report, judged_elsewhere: &[&str]) -> Vec<Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && !judged_elsewhere.iter().any(|p| f.id.starts_with(p)))
        .cloned()
        .collect()
}

impl Run<'_> {
    pub(super) fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_start = self.target.now();
        self.proof.clear();
        self.observer.started(phase, self.plan.deadline(phase));
    }

    /// Tells the observer what the running phase does now.
    pub(super) fn doing(&mut self, what: &str) {
        self.observer.doing(self.phase, what);
    }

    /// What is left of the phase's deadline.
    pub(super) fn left(&self) -> Duration {
        self.plan.deadline(self.phase).saturating_sub(self.target.now().saturating_sub(self.phase_start))
    }

    /// Fails the phase when it is past its deadline.
    pub(super) fn in_time(&self) -> Result<(), Stop> {
        if self.left().is_zero() {
            let standing = self.report_standing_guess();
            return Err(Stop::failed(
                standing,
                format!(
                    "the {} phase passed its deadline of {} s",
                    self.phase,
                    self.plan.deadline(self.phase).as_secs()
                ),
                self.phase,
                "look at the target, then resume",
            ));
        }
        Ok(())
    }

    /// Where a phase past its deadline leaves the machine: what the
    /// phase may have changed by then.
    pub(super) fn report_standing_guess(&self) -> Standing {
        match self.phase {
            Phase::PreFlight => {
                if self.plan.phases.contains(Phase::Kexec) {
                    Standing::OldOsUntouched
                } else {
                    Standing::InstallerDisksUntouched
                }
            }
            Phase::Kexec | Phase::Reboot => Standing::Unknown,
            Phase::Disko => Standing::DisksPartlyWritten,
            Phase::Install => Standing::DisksWritten,
        }
    }

    pub(super) fn record(&mut self, phase: Phase, result: PhaseResult, error: Option<String>) {
        self.record_with(phase, result, error, Vec::new());
    }

    pub(super) fn record_with(&mut self, phase: Phase, result: PhaseResult, error: Option<String>, proof: Vec<String>) {
        let seconds = match result {
            PhaseResult::Skipped | PhaseResult::NotReached => 0,
            _ => self.target.now().saturating_sub(self.phase_start).as_secs(),
        };
        let record = PhaseRecord { phase, result, seconds, proof, error };
        self.observer.finished(&record);
        self.report.phases.push(record);
    }

    pub(super) fn resume_command(&self, from: Phase) -> String {
        let mut phases = crate::phase::Phases::from(from);
        if from == Phase::PreFlight {
            phases = self.plan.phases;
        }
        format!("fleetgate install {} --target {} --phases {}", self.plan.flake, self.plan.target, phases.arg())
    }

    pub(super) fn stop(mut self, phase: Phase, stop: Stop) -> InstallReport {
        let proof = std::mem::take(&mut self.proof);
        self.record_with(phase, stop.result, Some(stop.error), proof);
        for later in Phase::ALL.iter().filter(|p| **p > phase) {
            let result = if self.plan.phases.contains(*later) { PhaseResult::NotReached } else { PhaseResult::Skipped };
            self.record(*later, result, None);
        }
        self.report.outcome = stop.outcome;
        self.report.standing = stop.standing;
        self.report.next_step = stop.next_step;
        // A booted system is no installer: nothing resumes from there.
        let resumable = !matches!(stop.standing, Standing::BootedUnhealthy | Standing::Unknown);
        self.report.resume = stop.resume_from.filter(|_| resumable).map(|p| self.resume_command(p));
        // Where nothing answers (or the booted system is unhealthy), the
        // console is where the operator looks next: its tail is in the report.
        let console_tells = match phase {
            Phase::Reboot => matches!(stop.standing, Standing::Unknown | Standing::BootedUnhealthy),
            Phase::Kexec => stop.standing == Standing::Unknown,
            _ => false,
        };
        if console_tells {
            self.report.console_tail = self.target.console_tail();
        }
        self.report
    }
}
