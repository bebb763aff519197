//! The kexec phase (the table's `Kexec` row): into the installer, proven
//! by a new boot id, the nonce in `/proc/cmdline`, the installer's kernel
//! and no disk mounted.

use super::run::{Run, may_lose_contact};
use crate::phase::Phase;
use crate::proof;
use crate::report::Standing;
use crate::stop::Stop;
use crate::target::SameBootEnds;

impl Run<'_> {
    pub(super) fn kexec(&mut self) -> Result<Standing, Stop> {
        let resume = "fix the cause, then run the same command (the old OS is untouched)";
        self.doing("looking at the target");
        let before = self.target.look(self.left()).map_err(|e| {
            Stop::failed(Standing::OldOsUntouched, format!("cannot look at the target: {e}"), Phase::Kexec, resume)
        })?;
        let marker = self.plan.nonce.marker();
        self.doing("staging the kexec tarball");
        let staged = self.target.stage_kexec(&marker, self.left()).map_err(|e| {
            Stop::failed(Standing::OldOsUntouched, format!("staging the kexec tarball: {e}"), Phase::Kexec, resume)
        })?;
        self.installer_kernel = staged.kernel_release;
        self.doing("running the tarball's kexec/run");
        let started = self.target.start_kexec(self.left());
        // Only a `run` that returned has loaded the installer (or nothing)
        // for good; one cut off may still be loading it.
        let same_boot_ends =
            if started.is_ok() { SameBootEnds::NothingLoadedForKexec } else { SameBootEnds::AtDeadline };
        may_lose_contact(started).map_err(|e| {
            Stop::failed(Standing::OldOsUntouched, format!("the kexec tarball's run failed: {e}"), Phase::Kexec, resume)
        })?;
        self.doing("waiting for the installer to boot");
        let waited = self.target.wait_for_boot(&before.boot_id, same_boot_ends, self.left());
        let lines = proof::kexec(&before, &waited, &marker, self.installer_kernel.as_deref())
            .map_err(|u| Stop::unproven(u, Phase::Kexec, "look at the target's console; nothing was destroyed"))?;
        self.proof.extend(lines);
        if self.hardware.is_some() {
            self.doing("keeping the pre-flight facts on the installer");
        }
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
}
