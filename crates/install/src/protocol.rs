//! The install protocol: an explicit state machine over [`Target`].
//!
//! Each phase has a deadline ([`Plan::deadlines`]); every step is given
//! what remains of it, and a phase past its deadline fails. A phase not in
//! `--phases` is skipped; `pre-flight` always runs (it changes nothing).
//!
//! | state | steps | proof (→ next state) | exits: outcome, [`Standing`], resume |
//! | --- | --- | --- | --- |
//! | PreFlight | with kexec: look + facts of the running OS; without: look (a `fleetgate.install=` marker: an installer fleetgate started) + the facts kept on it. `check` of the system against those facts; every fstab device against the layout; every layout disk exists; the new root's disk carries the old OS's root (its driver chain is what check judged) | no error finding but `root.*`/`switch.*` (judged by the layout here); every device created by a partition → Kexec | facts unreadable, blocking findings, a device the layout does not create, a missing disk, a new root on another disk (cannot judge), no marker, no kept facts → Refused (OldOsUntouched, or InstallerDisksUntouched/NotTheInstaller without kexec); resume: the same command once fixed |
//! | Kexec | look (boot id) → stage tarball (marker in `run`) → `run` → wait for a new boot → keep the pre-flight facts on the installer | new boot id, marker in `/proc/cmdline`, installer's kernel, no disk mounted → Disko | stage/run failed → Failed (OldOsUntouched); same boot id → Failed (OldOsUntouched); no marker / other kernel → Failed (NotTheInstaller); a disk mounted → Failed (InstallerDisksUntouched); no answer → Unknown; resume `--phases kexec,…` |
//! | Disko | what uses the layout's disks → copy the disko script → run it → facts + look | every fstab device resolves and is mounted under `/mnt` → Install | a disk in use → Refused (InstallerDisksUntouched, naming the holder), resume `--phases disko,…`; copy failed → Failed (InstallerDisksUntouched); disko failed → Failed (DisksPartlyWritten); proof failed → Failed (DisksWritten) |
//! | Install | copy the closure into `/mnt` → `nixos-install --system` → the installed boot loader's default → `check` against the installer's facts with the old OS's disk chain | default entry boots the system; no error finding but `switch.*` and `root.fs-type-differs` (it compares with the installer's own root) → Reboot | copy/install failed → Failed (DisksWritten), resume `--phases install,reboot`; default not the system, or blocking findings → Failed (SystemInstalled: do not reboot) |
//! | Reboot | look (installer boot id) → reboot → wait for a new boot → health | new boot id, `/run/booted-system` = system, no marker, `is-system-running` = running → Installed (Booted) | reboot failed → Failed (SystemInstalled); same boot id → Failed (SystemInstalled); no answer / another system → Unknown + console tail; unhealthy → Failed (BootedUnhealthy) + console tail |

use std::time::Duration;

use fleetgate_check::Report;
use fleetgate_facts::{Facts, Finding, Severity};
use fleetgate_system::RootSpec;

use crate::kexec::Nonce;
use crate::layout::{Created, Layout};
use crate::phase::{Phase, Phases};
use crate::proof;
use crate::report::{FORMAT, InstallReport, Outcome, PhaseRecord, PhaseResult, Standing};
use crate::stop::Stop;
use crate::target::{DiskUser, Target, TargetError};

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

/// Progress, as it happens.
pub trait Observer {
    /// A phase begins.
    fn started(&mut self, phase: Phase);
    /// A phase ended (also skipped ones).
    fn finished(&mut self, record: &PhaseRecord);
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn started(&mut self, _: Phase) {}
    fn finished(&mut self, _: &PhaseRecord) {}
}

/// The run: what it learnt, and the report it builds.
struct Run<'a> {
    target: &'a mut dyn Target,
    check: &'a dyn SystemCheck,
    plan: &'a Plan,
    observer: &'a mut dyn Observer,
    report: InstallReport,
    /// The facts the hardware is judged by (the old OS's).
    hardware: Option<Facts>,
    installer_kernel: Option<String>,
    phase_start: Duration,
    phase: Phase,
    proof: Vec<String>,
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

/// The error findings of `report`, but those whose id starts with one of
/// `judged_elsewhere`.
fn blocking(report: &Report, judged_elsewhere: &[&str]) -> Vec<Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && !judged_elsewhere.iter().any(|p| f.id.starts_with(p)))
        .cloned()
        .collect()
}

/// The kernel name (`vda`) of a disk device path (`/dev/vda`,
/// `/dev/disk/by-id/…`) on the host these facts describe, if it is there.
fn kernel_name(disk: &str, facts: &Facts) -> Option<String> {
    let name = match disk.strip_prefix("/dev/disk/").and_then(|rest| rest.split_once('/')) {
        Some((kind, link)) => facts.disk_link(kind, link)?.target.rsplit('/').next()?.to_owned(),
        None => disk.rsplit('/').next()?.to_owned(),
    };
    facts.block_devices.iter().any(|b| b.name == name).then_some(name)
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

impl Run<'_> {
    fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_start = self.target.now();
        self.proof.clear();
        self.observer.started(phase);
    }

    /// What is left of the phase's deadline.
    fn left(&self) -> Duration {
        self.plan.deadline(self.phase).saturating_sub(self.target.now().saturating_sub(self.phase_start))
    }

    /// Fails the phase when it is past its deadline.
    fn in_time(&self) -> Result<(), Stop> {
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
    fn report_standing_guess(&self) -> Standing {
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

    fn record(&mut self, phase: Phase, result: PhaseResult, error: Option<String>) {
        self.record_with(phase, result, error, Vec::new());
    }

    fn record_with(&mut self, phase: Phase, result: PhaseResult, error: Option<String>, proof: Vec<String>) {
        let seconds = match result {
            PhaseResult::Skipped | PhaseResult::NotReached => 0,
            _ => self.target.now().saturating_sub(self.phase_start).as_secs(),
        };
        let record = PhaseRecord { phase, result, seconds, proof, error };
        self.observer.finished(&record);
        self.report.phases.push(record);
    }

    fn resume_command(&self, from: Phase) -> String {
        let mut phases = crate::phase::Phases::from(from);
        if from == Phase::PreFlight {
            phases = self.plan.phases;
        }
        format!("fleetgate install {} --target {} --phases {}", self.plan.flake, self.plan.target, phases.arg())
    }

    fn stop(mut self, phase: Phase, stop: Stop) -> InstallReport {
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
        if matches!(stop.standing, Standing::Unknown | Standing::BootedUnhealthy) && phase == Phase::Reboot {
            self.report.console_tail = self.target.console_tail();
        }
        self.report
    }

    fn pre_flight(&mut self) -> Result<Standing, Stop> {
        let with_kexec = self.plan.phases.contains(Phase::Kexec);
        let untouched = if with_kexec { Standing::OldOsUntouched } else { Standing::InstallerDisksUntouched };
        let cannot = |why: String| {
            Stop::refused(untouched, why, Phase::PreFlight, "make the target reachable, then run the same command")
        };
        let look = self.target.look(self.left()).map_err(|e| cannot(format!("cannot look at the target: {e}")))?;
        let facts = if with_kexec {
            if proof::has_any_marker(&look.cmdline) {
                return Err(Stop::refused(
                    Standing::InstallerDisksUntouched,
                    "the target already runs an installer fleetgate started (`fleetgate.install=` in /proc/cmdline)",
                    Phase::Disko,
                    "resume without kexec",
                ));
            }
            self.target.facts(self.left()).map_err(|e| cannot(format!("cannot read the target's facts: {e}")))?
        } else {
            if !proof::has_any_marker(&look.cmdline) {
                return Err(Stop::refused(
                    Standing::NotTheInstaller,
                    format!(
                        "without the kexec phase the target must run an installer fleetgate started, and /proc/cmdline has no `fleetgate.install=` ({})",
                        look.cmdline
                    ),
                    Phase::Kexec,
                    "run the kexec phase too (it checks the running OS first)",
                ));
            }
            let kept =
                self.target.kept_facts(self.left()).map_err(|e| cannot(format!("cannot read the kept facts: {e}")))?;
            kept.ok_or_else(|| {
                Stop::refused(
                    Standing::InstallerDisksUntouched,
                    "the facts of the old OS are not on the installer (they are kept after a proven kexec): the hardware cannot be judged",
                    Phase::Kexec,
                    "start again from the kexec phase",
                )
            })?
        };
        let report = self.check.check(&facts, self.left());
        let blocking = blocking(&report, &["root.", "switch."]);
        self.proof.push(format!(
            "check of {} against the hardware of {}: {} error findings that block",
            report.system,
            facts.target,
            blocking.len()
        ));
        if !blocking.is_empty() {
            let ids: Vec<&str> = blocking.iter().map(|f| f.id.as_str()).collect();
            self.report.findings = blocking.clone();
            return Err(Stop::refused(
                untouched,
                format!("the system would not boot on this hardware ({})", ids.join(", ")),
                Phase::PreFlight,
                "fix the configuration (a hardware report: --generate-hardware-config PATH), rebuild, run again",
            ));
        }
        for (mount_point, spec) in self.check.needed_devices() {
            match self.plan.layout.creates(&spec) {
                Created::By(part) => {
                    self.proof.push(format!("{spec} ({mount_point}) is created by disko partition {part}"))
                }
                Created::No => {
                    return Err(Stop::refused(
                        untouched,
                        format!(
                            "the system mounts {spec} at {mount_point}, and the disko layout creates no such device"
                        ),
                        Phase::PreFlight,
                        "make fileSystems and the disko layout agree, rebuild, run again",
                    ));
                }
                Created::CannotTell(why) => {
                    return Err(Stop::refused(
                        untouched,
                        why,
                        Phase::PreFlight,
                        "rebuild with a device disko names, run again",
                    ));
                }
            }
        }
        for disk in self.plan.layout.disk_devices() {
            if kernel_name(&disk, &facts).is_none() {
                return Err(Stop::refused(
                    untouched,
                    format!("the disko layout's disk {disk} does not exist on the target"),
                    Phase::PreFlight,
                    "name the target's disk in the disko configuration, rebuild, run again",
                ));
            }
            self.proof.push(format!("disk {disk} exists"));
        }
        // The initrd was judged by the old OS's root device chain: that is
        // the new root's hardware only when the new root is on the same disk.
        if let Some(root_disk) = self.plan.layout.root_disk() {
            let name = kernel_name(root_disk, &facts).unwrap_or_default();
            let on_chain = facts.root_chain.iter().any(|d| {
                d.devname.as_deref() == Some(name.as_str())
                    || d.sysfs.ends_with(&format!("/block/{name}"))
                    || d.sysfs.contains(&format!("/block/{name}/"))
            });
            if !on_chain {
                return Err(Stop::refused(
                    untouched,
                    format!(
                        "cannot judge: the new root goes on {root_disk}, the old OS's root is not on that disk, and the initrd is judged by the old root's device chain"
                    ),
                    Phase::PreFlight,
                    "install on the disk the running OS boots from, or check the system against that disk's drivers yourself",
                ));
            }
            self.proof.push(format!(
                "the new root's disk {root_disk} carries the old OS's root: its driver chain was judged"
            ));
        }
        self.hardware = Some(facts);
        Ok(untouched)
    }

    fn kexec(&mut self) -> Result<Standing, Stop> {
        let resume = "fix the cause, then run the same command (the old OS is untouched)";
        let before = self.target.look(self.left()).map_err(|e| {
            Stop::failed(Standing::OldOsUntouched, format!("cannot look at the target: {e}"), Phase::Kexec, resume)
        })?;
        let marker = self.plan.nonce.marker();
        let staged = self.target.stage_kexec(&marker, self.left()).map_err(|e| {
            Stop::failed(Standing::OldOsUntouched, format!("staging the kexec tarball: {e}"), Phase::Kexec, resume)
        })?;
        self.installer_kernel = staged.kernel_release;
        match self.target.start_kexec(self.left()) {
            Ok(()) | Err(TargetError::Lost(_)) => {}
            Err(e) => {
                return Err(Stop::failed(
                    Standing::OldOsUntouched,
                    format!("the kexec tarball's run failed: {e}"),
                    Phase::Kexec,
                    resume,
                ));
            }
        }
        let waited = self.target.wait_for_boot(&before.boot_id, self.left());
        let lines = proof::kexec(&before, &waited, &marker, self.installer_kernel.as_deref())
            .map_err(|u| Stop::unproven(u, Phase::Kexec, "look at the target's console; nothing was destroyed"))?;
        self.proof.extend(lines);
        if let Some(facts) = &self.hardware {
            self.target.keep_facts(facts, self.left()).map_err(|e| {
                Stop::failed(
                    Standing::InstallerDisksUntouched,
                    format!("keeping the pre-flight facts on the installer: {e}"),
                    Phase::Kexec,
                    resume,
                )
            })?;
        }
        Ok(Standing::InstallerDisksUntouched)
    }

    fn disko(&mut self) -> Result<Standing, Stop> {
        let disks = self.plan.layout.disk_devices();
        let users: Vec<DiskUser> = self.target.disk_users(&disks, self.left()).map_err(|e| {
            Stop::failed(
                Standing::InstallerDisksUntouched,
                format!("cannot see what uses the disks: {e}"),
                Phase::Disko,
                "run again",
            )
        })?;
        if let Some(first) = users.first() {
            let error =
                format!("a target disk is in use: {} — disko would destroy it under its user", first.describe());
            self.report.disk_users = users;
            return Err(Stop::refused(
                Standing::InstallerDisksUntouched,
                error,
                Phase::Disko,
                "unmount it, swapoff, or stop the holder (dmsetup remove, mdadm --stop), then resume",
            ));
        }
        self.proof.push(format!("no partition of {} is mounted, swapped on or held", disks.join(", ")));
        let script = self.plan.disko_script.clone();
        self.target.copy_paths(std::slice::from_ref(&script), false, self.left()).map_err(|e| {
            Stop::failed(
                Standing::InstallerDisksUntouched,
                format!("copying the disko script: {e}"),
                Phase::Disko,
                "resume from disko",
            )
        })?;
        self.target.run_disko(&script, self.left()).map_err(|e| {
            Stop::failed(
                Standing::DisksPartlyWritten,
                format!("disko failed: {e}"),
                Phase::Disko,
                "look at disko's output, then resume from disko",
            )
        })?;
        let facts = self.target.facts(self.left()).map_err(|e| {
            Stop::failed(
                Standing::DisksPartlyWritten,
                format!("cannot read the facts after disko: {e}"),
                Phase::Disko,
                "resume from disko",
            )
        })?;
        let look = self.target.look(self.left()).map_err(|e| {
            Stop::failed(
                Standing::DisksPartlyWritten,
                format!("cannot look at the target after disko: {e}"),
                Phase::Disko,
                "resume from disko",
            )
        })?;
        let lines = proof::disko(&self.check.needed_devices(), &facts, &look).map_err(|u| {
            Stop::unproven(u, Phase::Disko, "make fileSystems and the disko layout agree, rebuild, resume from disko")
        })?;
        self.proof.extend(lines);
        Ok(Standing::DisksWritten)
    }

    fn install(&mut self) -> Result<Standing, Stop> {
        let system = self.plan.system.clone();
        let next = "look at the error, then resume";
        self.target.copy_paths(std::slice::from_ref(&system), true, self.left()).map_err(|e| {
            Stop::failed(Standing::DisksWritten, format!("copying the system into /mnt: {e}"), Phase::Install, next)
        })?;
        self.target.install_system(&system, self.left()).map_err(|e| {
            Stop::failed(Standing::DisksWritten, format!("nixos-install failed: {e}"), Phase::Install, next)
        })?;
        let default = self.target.installed_boot_default(self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("cannot read the installed boot loader: {e}"),
                Phase::Install,
                next,
            )
        })?;
        let line = proof::boot_default(default.as_deref(), &system).map_err(|u| {
            Stop::unproven(u, Phase::Install, "do not reboot: fix the boot loader configuration, rebuild, resume")
        })?;
        self.proof.push(line);
        let mut facts = self.target.facts(self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("cannot read the installer's facts: {e}"),
                Phase::Install,
                next,
            )
        })?;
        // The installer's `/` is a tmpfs: the disk's driver chain is the one
        // the old OS saw (the same hardware), kept since pre-flight.
        if let Some(hw) = &self.hardware {
            facts.root_chain.clone_from(&hw.root_chain);
        }
        let report = self.check.check(&facts, self.left());
        // `root.fs-type-differs` compares the new `/` with the *running*
        // root's file system: here the installer's own tmpfs (nixos-images'
        // too), never the installed disk's, whose file systems disko made and
        // the disko proof found mounted (found on the VM: every install was
        // refused with "the device holds tmpfs").
        let blocking = blocking(&report, &["switch.", "root.fs-type-differs"]);
        if !blocking.is_empty() {
            let ids: Vec<&str> = blocking.iter().map(|f| f.id.as_str()).collect();
            self.report.findings = blocking.clone();
            return Err(Stop::failed(
                Standing::SystemInstalled,
                format!("the installed system would not boot on this hardware ({})", ids.join(", ")),
                Phase::Install,
                "do not reboot: fix the configuration, rebuild, resume",
            ));
        }
        self.proof.push("check passes against the hardware as the installer sees it".into());
        Ok(Standing::SystemInstalled)
    }

    fn reboot(&mut self) -> Result<Standing, Stop> {
        let system = self.plan.system.clone();
        let before = self.target.look(self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("cannot look at the installer: {e}"),
                Phase::Reboot,
                "resume from reboot",
            )
        })?;
        match self.target.reboot(self.left()) {
            Ok(()) | Err(TargetError::Lost(_)) => {}
            Err(e) => {
                return Err(Stop::failed(
                    Standing::SystemInstalled,
                    format!("reboot failed: {e}"),
                    Phase::Reboot,
                    "resume from reboot",
                ));
            }
        }
        let waited = self.target.wait_for_boot(&before.boot_id, self.left());
        let look = proof::first_boot(&before.boot_id, &waited, &system).map_err(|u| {
            Stop::unproven(u, Phase::Reboot, "look at the console tail: the first boot did not come up as installed")
        })?;
        self.proof.push(format!("boot id {} → {}", before.boot_id, look.boot_id));
        self.proof.push(format!("/run/booted-system is {system}"));
        let health = self.target.health(self.left()).map_err(|e| {
            Stop::failed(
                Standing::BootedUnhealthy,
                format!("cannot ask the installed system's health: {e}"),
                Phase::Reboot,
                "look at the host",
            )
        })?;
        if !health.healthy() {
            return Err(Stop::failed(
                Standing::BootedUnhealthy,
                format!("the installed system is {} (failed: {})", health.state, health.failed_units.join(", ")),
                Phase::Reboot,
                "log in and look at the failed units",
            ));
        }
        self.proof.push(format!("systemctl is-system-running: {}", health.state));
        Ok(Standing::Booted)
    }
}
