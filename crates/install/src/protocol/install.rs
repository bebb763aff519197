//! The install phase (the table's `Install` row): the closure into `/mnt`,
//! `nixos-install`, the installed boot loader's default proven, `check`
//! again with the installer's view.

use super::run::{Run, blocking};
use crate::enrol;
use crate::phase::Phase;
use crate::proof;
use crate::report::Standing;
use crate::stop::Stop;

impl Run<'_> {
    pub(super) fn install(&mut self) -> Result<Standing, Stop> {
        let system = self.plan.system.clone();
        let next = "look at the error, then resume";
        self.doing("copying the system into /mnt");
        self.target.copy_paths(std::slice::from_ref(&system), true, self.left()).map_err(|e| {
            Stop::failed(Standing::DisksWritten, format!("copying the system into /mnt: {e}"), Phase::Install, next)
        })?;
        self.doing("running nixos-install");
        self.target.install_system(&system, self.left()).map_err(|e| {
            Stop::failed(Standing::DisksWritten, format!("nixos-install failed: {e}"), Phase::Install, next)
        })?;
        self.doing("reading the installed boot loader");
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
        self.doing("checking the system against the installer's view");
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
        if !self.plan.enrol.is_empty() {
            self.enrol_for_the_agent()?;
        }
        Ok(Standing::SystemInstalled)
    }

    /// Writes the agent's files into `/mnt` and proves them by reading them
    /// back ([`crate::enrol`]): the last step before the reboot.
    fn enrol_for_the_agent(&mut self) -> Result<(), Stop> {
        let files = self.plan.enrol.files();
        let next = "the system is installed, not enrolled: fix the cause, then resume (install, reboot)";
        self.doing("writing the agent's files into /mnt");
        self.target.enrol(files, self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("writing the agent's files into /mnt: {e}"),
                Phase::Install,
                next,
            )
        })?;
        self.doing("reading the agent's files back");
        let read = self.target.read_back_enrolled(files, self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("reading the agent's files back: {e}"),
                Phase::Install,
                next,
            )
        })?;
        let lines = enrol::prove(files, &read).map_err(|why| {
            Stop::failed(Standing::SystemInstalled, format!("agent enrolment not proven: {why}"), Phase::Install, next)
        })?;
        self.proof.extend(lines);
        Ok(())
    }
}
