//! The pre-flight phase (the table's `PreFlight` row): changes nothing;
//! judges the built system against the hardware of the running OS and the
//! disko layout against what the system mounts.

use fleetgate_facts::Facts;

use super::run::{Run, blocking};
use crate::layout::Created;
use crate::phase::Phase;
use crate::proof;
use crate::report::Standing;
use crate::stop::Stop;

impl Run<'_> {
    pub(super) fn pre_flight(&mut self) -> Result<Standing, Stop> {
        let with_kexec = self.plan.phases.contains(Phase::Kexec);
        let untouched = if with_kexec { Standing::OldOsUntouched } else { Standing::InstallerDisksUntouched };
        let cannot = |why: String| {
            Stop::refused(untouched, why, Phase::PreFlight, "make the target reachable, then run the same command")
        };
        self.doing("looking at the target");
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
            self.doing("reading the running OS's facts");
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
            self.doing("reading the facts kept on the installer");
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
        self.doing("checking the system against the hardware");
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
