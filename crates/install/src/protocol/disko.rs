//! The disko phase (the table's `Disko` row): refuses disks in use, runs
//! the disko script, proves every fstab device is created and mounted.

use super::run::Run;
use crate::phase::Phase;
use crate::proof;
use crate::report::Standing;
use crate::stop::Stop;
use crate::target::DiskUser;

impl Run<'_> {
    pub(super) fn disko(&mut self) -> Result<Standing, Stop> {
        let disks = self.plan.layout.disk_devices();
        self.doing("looking for what uses the disks");
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
        self.doing("copying the disko script");
        self.target.copy_paths(std::slice::from_ref(&script), false, self.left()).map_err(|e| {
            Stop::failed(
                Standing::InstallerDisksUntouched,
                format!("copying the disko script: {e}"),
                Phase::Disko,
                "resume from disko",
            )
        })?;
        self.doing("running disko");
        self.target.run_disko(&script, self.left()).map_err(|e| {
            Stop::failed(
                Standing::DisksPartlyWritten,
                format!("disko failed: {e}"),
                Phase::Disko,
                "look at disko's output, then resume from disko",
            )
        })?;
        self.doing("reading the facts after disko");
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
}
