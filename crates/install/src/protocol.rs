//! The install protocol: an explicit state machine over [`Target`].
//!
//! Each phase has a deadline ([`Plan::deadlines`]); every step is given
//! what remains of it, and a phase past its deadline fails. A phase not in
//! `--phases` is skipped; `pre-flight` always runs (it changes nothing).
//!
//! | state | steps | proof (→ next state) | exits: outcome, [`Standing`], resume |
//! | --- | --- | --- | --- |
//! | PreFlight | with kexec: look + facts of the running OS; without: look (a `fleetgate.install=` marker: an installer fleetgate started) + the facts kept on it. `check` of the system against those facts; every fstab device against the layout; every layout disk exists; the new root's disk carries the old OS's root (its driver chain is what check judged) | no error finding but `root.*`/`switch.*` (judged by the layout here); every device created by a partition → Kexec | facts unreadable, blocking findings, a device the layout does not create, a missing disk, a new root on another disk (cannot judge), no marker, no kept facts → Refused (OldOsUntouched, or InstallerDisksUntouched/NotTheInstaller without kexec); resume: the same command once fixed |
//! | Kexec | look (boot id) → stage tarball (marker in `run`) → `run` → wait for a new boot → keep the pre-flight facts on the installer | new boot id, marker in `/proc/cmdline`, installer's kernel, no disk mounted → Disko | stage/run failed → Failed (OldOsUntouched); same boot id (at the deadline, or at once after a `run` that returned with nothing loaded for kexec) → Failed (OldOsUntouched); no marker / other kernel → Failed (NotTheInstaller); a disk mounted → Failed (InstallerDisksUntouched); no answer → Unknown + console tail; resume `--phases kexec,…` |
//! | Disko | what uses the layout's disks → copy the disko script → run it → facts + look | every fstab device resolves and is mounted under `/mnt` → Install | a disk in use → Refused (InstallerDisksUntouched, naming the holder), resume `--phases disko,…`; copy failed → Failed (InstallerDisksUntouched); disko failed → Failed (DisksPartlyWritten); proof failed → Failed (DisksWritten) |
//! | Install | copy the closure into `/mnt` → `nixos-install --system` → the installed boot loader's default → `check` against the installer's facts with the old OS's disk chain → with `Plan::enrol`: write the agent's files into `/mnt` → read them back | default entry boots the system; no error finding but `switch.*` and `root.fs-type-differs` (it compares with the installer's own root); every enrolled file reads back with the size, SHA-256, mode and owner sent → Reboot | copy/install failed → Failed (DisksWritten), resume `--phases install,reboot`; default not the system, or blocking findings → Failed (SystemInstalled: do not reboot); enrolment not written, not read back, or differing → Failed (SystemInstalled), resume `--phases install,reboot` |
//! | Reboot | look (installer boot id) → reboot → wait for a new boot → health | new boot id, `/run/booted-system` = system, no marker, `is-system-running` = running → Installed (Booted) | reboot failed → Failed (SystemInstalled); same boot id → Failed (SystemInstalled); no answer / another system → Unknown + console tail; unhealthy → Failed (BootedUnhealthy) + console tail |
//!
//! One file per concept: this file has the plan, the traits the protocol
//! depends on and the loop over the phases; `protocol/run.rs` the
//! bookkeeping of a run (deadlines, records, how a stop ends the report);
//! then one file per phase, each a row of the table above:
//! `protocol/pre_flight.rs`, `kexec.rs`, `disko.rs`, `install.rs`,
//! `reboot.rs`.

mod disko;
mod install;
mod kexec;
mod pre_flight;
mod reboot;
mod run;

use std::time::Duration;

use fleetgate_check::Report;
use fleetgate_facts::Facts;
use fleetgate_system::RootSpec;

use crate::enrol::Enrolment;
use crate::kexec::Nonce;
use crate::layout::Layout;
use crate::phase::{Phase, Phases};
use crate::report::{FORMAT, InstallReport, Outcome, PhaseRecord, PhaseResult, Standing};
use crate::target::Target;

use self::run::Run;
/// The system to install, judged locally: `check` against a host's facts,
/// and the block devices its fstab needs. [`crate::ssh::BuiltSystem`] reads
/// a built system toplevel; tests script it.
pub trait SystemCheck {
    /// `fleetgate-check`'s verdict on the system for the host these facts
    /// describe, within `deadline`.
    fn check(&self, facts: &Facts, deadline: Duration) -> Report;
    /// Mount point (or `none` for swap) and device of every block device
    /// the system's fstab (and `root=`) names.
    fn needed_devices(&self) -> Vec<(String, RootSpec)>;
}

/// What to install where.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `FLAKE#HOST`, for the resume command.
    pub flake: String,
    /// The target as given (`ssh://root@192.0.2.10`).
    pub target: String,
    /// The system toplevel's store path.
    pub system: String,
    /// `config.system.build.diskoScript`'s store path.
    pub disko_script: String,
    /// What the disko configuration creates.
    pub layout: Layout,
    /// The phases to run.
    pub phases: Phases,
    /// Each phase's deadline, in [`Phase::ALL`] order.
    pub deadlines: [Duration; 5],
    /// The kexec's nonce.
    pub nonce: Nonce,
    /// The agent's files to write into the installed system (none: the
    /// host is not enrolled for the agent).
    pub enrol: Enrolment,
}

impl Plan {
    /// The deadline of `phase`.
    #[must_use]
    pub fn deadline(&self, phase: Phase) -> Duration {
        let i = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.deadlines[i]
    }

    /// The default deadlines.
    #[must_use]
    pub fn default_deadlines() -> [Duration; 5] {
        Phase::ALL.map(Phase::default_deadline)
    }
}

/// Progress, as it happens: what a terminal's live lines (or a log's plain
/// lines) show while the install runs. The report says it all at the end.
pub trait Observer {
    /// A phase begins; it has `deadline` to prove itself.
    fn started(&mut self, phase: Phase, deadline: Duration);
    /// A step of the running phase begins: what it does or waits for
    /// (`waiting for the installer to boot`).
    fn doing(&mut self, _phase: Phase, _what: &str) {}
    /// A phase ended (also skipped ones).
    fn finished(&mut self, record: &PhaseRecord);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn started(&mut self, _: Phase, _: Duration) {}
    fn finished(&mut self, _: &PhaseRecord) {}
}

/// Installs `plan.system` on `target`, phase by phase, each proven before
/// the next; see the table at the top of this module.
pub fn install(
    target: &mut dyn Target,
    check: &dyn SystemCheck,
    plan: &Plan,
    observer: &mut dyn Observer,
) -> InstallReport {
    let report = InstallReport {
        format: FORMAT,
        target: plan.target.clone(),
        flake: plan.flake.clone(),
        system: plan.system.clone(),
        outcome: Outcome::Installed,
        standing: Standing::Unknown,
        phases: Vec::new(),
        findings: Vec::new(),
        disk_users: Vec::new(),
        console_tail: Vec::new(),
        next_step: String::new(),
        resume: None,
    };
    let mut run = Run {
        target,
        check,
        plan,
        observer,
        report,
        hardware: None,
        installer_kernel: None,
        phase_start: Duration::ZERO,
        phase: Phase::PreFlight,
        proof: Vec::new(),
    };
    let mut standing = if plan.phases.contains(Phase::Kexec) { Standing::OldOsUntouched } else { Standing::Unknown };
    for phase in Phase::ALL {
        if !plan.phases.contains(phase) {
            run.record(phase, PhaseResult::Skipped, None);
            continue;
        }
        run.begin(phase);
        let step = match phase {
            Phase::PreFlight => run.pre_flight(),
            Phase::Kexec => run.kexec(),
            Phase::Disko => run.disko(),
            Phase::Install => run.install(),
            Phase::Reboot => run.reboot(),
        };
        match step.and_then(|s| run.in_time().map(|()| s)) {
            Ok(now) => {
                standing = now;
                let proof = std::mem::take(&mut run.proof);
                run.record_with(phase, PhaseResult::Proven, None, proof);
            }
            Err(stop) => return run.stop(phase, stop),
        }
    }
    run.report.standing = standing;
    run.report.next_step = match standing {
        Standing::Booted => {
            "nothing: the installed system runs; `fleetgate facts` and `fleetgate deploy` work on it".into()
        }
        _ => format!("run the remaining phases: {}", run.resume_command(next_phase(plan.phases))),
    };
    run.report
}

/// The first phase after the last one requested.
fn next_phase(phases: Phases) -> Phase {
    Phase::ALL
        .iter()
        .rev()
        .find(|p| phases.contains(**p))
        .and_then(|last| Phase::ALL.iter().find(|p| *p > last))
        .copied()
        .unwrap_or(Phase::Reboot)
}
