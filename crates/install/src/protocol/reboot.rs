//! The reboot phase (the table's `Reboot` row): the first boot of the
//! installed system, proven by a new boot id, `/run/booted-system` and its
//! health.

use super::run::{Run, may_lose_contact};
use crate::phase::Phase;
use crate::proof;
use crate::report::Standing;
use crate::stop::Stop;
use crate::target::SameBootEnds;

impl Run<'_> {
    pub(super) fn reboot(&mut self) -> Result<Standing, Stop> {
        let system = self.plan.system.clone();
        self.doing("looking at the installer");
        let before = self.target.look(self.left()).map_err(|e| {
            Stop::failed(
                Standing::SystemInstalled,
                format!("cannot look at the installer: {e}"),
                Phase::Reboot,
                "resume from reboot",
            )
        })?;
        self.doing("rebooting");
        may_lose_contact(self.target.reboot(self.left())).map_err(|e| {
            Stop::failed(Standing::SystemInstalled, format!("reboot failed: {e}"), Phase::Reboot, "resume from reboot")
        })?;
        self.doing("waiting for the first boot");
        let waited = self.target.wait_for_boot(&before.boot_id, SameBootEnds::AtDeadline, self.left());
        let look = proof::first_boot(&before.boot_id, &waited, &system).map_err(|u| {
            Stop::unproven(u, Phase::Reboot, "look at the console tail: the first boot did not come up as installed")
        })?;
        self.proof.push(format!("boot id {} → {}", before.boot_id, look.boot_id));
        self.proof.push(format!("/run/booted-system is {system}"));
        self.doing("asking the installed system's health");
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
