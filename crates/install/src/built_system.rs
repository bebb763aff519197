//! A built system toplevel as pre-flight and the install phase check it.

use std::path::Path;
use std::time::Duration;

use fleetgate_check::Report;
use fleetgate_facts::Facts;
use fleetgate_system::{RootSpec, SystemToplevel};

use crate::protocol::SystemCheck;

/// A built system toplevel, checked with `fleetgate-check`.
pub struct BuiltSystem {
    toplevel: SystemToplevel,
    needed: Vec<(String, RootSpec)>,
}

impl BuiltSystem {
    /// Reads the system and its fstab.
    ///
    /// # Errors
    /// [`fleetgate_system::SystemError`] when it is not a readable system.
    pub fn open(path: &Path) -> Result<BuiltSystem, fleetgate_system::SystemError> {
        let toplevel = SystemToplevel::open(path)?;
        let mut needed: Vec<(String, RootSpec)> = Vec::new();
        for entry in toplevel.fstab()? {
            let spec = entry.device();
            if !matches!(spec, RootSpec::Other(_)) {
                needed.push((entry.mount_point.clone(), spec));
            }
        }
        if let Some(spec) = toplevel.root_filesystem()?.device() {
            if !matches!(spec, RootSpec::Other(_)) && !needed.iter().any(|(m, s)| m == "/" && *s == spec) {
                needed.push(("/".into(), spec));
            }
        }
        Ok(BuiltSystem { toplevel, needed })
    }
}

impl SystemCheck for BuiltSystem {
    fn check(&self, facts: &Facts, deadline: Duration) -> Report {
        let options =
            fleetgate_check::Options { no_closure_diff: true, deadline: Some(deadline), ..Default::default() };
        fleetgate_check::check(&self.toplevel, facts, &options)
    }

    fn needed_devices(&self) -> Vec<(String, RootSpec)> {
        self.needed.clone()
    }
}
