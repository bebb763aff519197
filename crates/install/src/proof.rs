//! The proofs: pure judgements of what the target showed, one per phase,
//! each either the evidence lines for the report or why it is not proven
//! and where that leaves the machine.

use fleetgate_facts::Facts;
use fleetgate_system::RootSpec;

use crate::report::Standing;
use crate::target::{Look, MountLine, Waited};

/// A proof that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unproven {
    /// Why, one sentence.
    pub reason: String,
    /// Where that leaves the machine.
    pub standing: Standing,
}

fn unproven(reason: impl Into<String>, standing: Standing) -> Unproven {
    Unproven { reason: reason.into(), standing }
}

/// Whether `cmdline` carries a marker of an installer fleetgate started
/// (any nonce).
#[must_use]
pub fn has_any_marker(cmdline: &str) -> bool {
    let prefix = format!("{}=", crate::kexec::MARKER_PARAM);
    cmdline.split_whitespace().any(|w| w.starts_with(&prefix))
}

/// Whether `cmdline` carries the kernel parameter `marker` as a word.
#[must_use]
pub fn has_param(cmdline: &str, marker: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == marker)
}

/// Mounts of block devices that are disks (not loop, RAM, zram or nbd
/// devices the installer itself uses).
#[must_use]
pub fn disk_mounts(look: &Look) -> Vec<&MountLine> {
    const NOT_DISKS: [&str; 4] = ["/dev/loop", "/dev/ram", "/dev/zram", "/dev/nbd"];
    look.mounts
        .iter()
        .filter(|m| m.source.starts_with("/dev/") && !NOT_DISKS.iter().any(|p| m.source.starts_with(p)))
        .collect()
}

/// The kexec happened: a new boot, the marker on its command line, the
/// installer's kernel (when its release is known), no disk mounted.
///
/// # Errors
/// [`Unproven`] naming what is missing; the machine then is the old OS
/// ([`Standing::OldOsUntouched`]) when the boot id did not change, and
/// otherwise a system fleetgate did not start ([`Standing::NotTheInstaller`]).
/// Either way no disk was touched.
pub fn kexec(
    before: &Look,
    waited: &Waited,
    marker: &str,
    installer_kernel: Option<&str>,
) -> Result<Vec<String>, Unproven> {
    let after = match waited {
        Waited::NewBoot(look) => look,
        Waited::SameBoot(look) => {
            let nothing_loaded = if look.kexec_loaded == Some(false) {
                ", and no kernel is loaded for kexec (/sys/kernel/kexec_loaded is 0): the tarball's kexec loaded nothing, so nothing will boot"
            } else {
                ""
            };
            return Err(unproven(
                format!(
                    "kexec reported success but the old OS still runs: boot id {} unchanged, kernel {}, and `{marker}` is not in /proc/cmdline{nothing_loaded}",
                    look.boot_id, look.kernel_release
                ),
                Standing::OldOsUntouched,
            ));
        }
        Waited::Unreachable(e) => {
            return Err(unproven(
                format!("the target did not answer after the kexec, within the phase's deadline: {e}"),
                Standing::Unknown,
            ));
        }
    };
    if !has_param(&after.cmdline, marker) {
        return Err(unproven(
            format!(
                "the target booted (boot id {} → {}) but not the installer fleetgate started: `{marker}` is not in /proc/cmdline ({})",
                before.boot_id, after.boot_id, after.cmdline
            ),
            Standing::NotTheInstaller,
        ));
    }
    if let Some(release) = installer_kernel {
        if after.kernel_release != release {
            return Err(unproven(
                format!("the running kernel is {}, not the installer's {release}", after.kernel_release),
                Standing::NotTheInstaller,
            ));
        }
    }
    let mounted = disk_mounts(after);
    if let Some(m) = mounted.first() {
        return Err(unproven(
            format!("the installer runs, but a disk is mounted: {} at {}", m.source, m.mount_point),
            Standing::InstallerDisksUntouched,
        ));
    }
    let mut lines = vec![
        format!("boot id {} → {}", before.boot_id, after.boot_id),
        format!("/proc/cmdline carries {marker}"),
        "no disk is mounted".to_owned(),
    ];
    lines.push(match installer_kernel {
        Some(r) => format!("kernel {r} is the installer's"),
        None => format!("kernel {} (the tarball's image header names no release)", after.kernel_release),
    });
    Ok(lines)
}

/// Where a spec resolves among the target's `/dev/disk/by-*` links.
fn resolve(spec: &RootSpec, facts: &Facts) -> Option<String> {
    let path = spec.device_path()?;
    let path = path.to_str()?;
    if let Some(rest) = path.strip_prefix("/dev/disk/") {
        let (kind, name) = rest.split_once('/')?;
        return facts.disk_link(kind, name).map(|l| l.target.clone());
    }
    let name = path.rsplit('/').next()?;
    facts.block_devices.iter().any(|b| b.name == name).then(|| path.to_owned())
}

/// disko made what the system needs: every device its fstab names exists,
/// and each mounted file system is mounted at its place under `/mnt`.
///
/// # Errors
/// [`Unproven`] naming the first device or mount missing
/// ([`Standing::DisksWritten`]).
pub fn disko(needed: &[(String, RootSpec)], facts: &Facts, look: &Look) -> Result<Vec<String>, Unproven> {
    let mut lines = Vec::new();
    for (mount_point, spec) in needed {
        let Some(device) = resolve(spec, facts) else {
            return Err(unproven(
                format!("after disko, {spec} (needed for {mount_point}) does not exist on the target"),
                Standing::DisksWritten,
            ));
        };
        if !mount_point.starts_with('/') {
            lines.push(format!("{spec} → {device} ({mount_point})"));
            continue;
        }
        let at = if mount_point == "/" { "/mnt".to_owned() } else { format!("/mnt{mount_point}") };
        let spec_path = spec.device_path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mounted = look.mounts.iter().rev().find(|m| m.mount_point == at);
        match mounted {
            Some(m) if m.source == device || m.source == spec_path => {
                lines.push(format!("{spec} → {device}, mounted at {at}"));
            }
            Some(m) => {
                return Err(unproven(
                    format!("{at} is mounted from {}, not from {spec} ({device})", m.source),
                    Standing::DisksWritten,
                ));
            }
            None => {
                return Err(unproven(format!("{spec} ({device}) is not mounted at {at}"), Standing::DisksWritten));
            }
        }
    }
    Ok(lines)
}

/// The installed boot loader boots `system` by default.
///
/// # Errors
/// [`Unproven`] ([`Standing::SystemInstalled`]: installed, but it would not
/// boot what was asked).
pub fn boot_default(default: Option<&str>, system: &str) -> Result<String, Unproven> {
    match default {
        Some(d) if d == system => Ok(format!("the boot loader's default entry boots {system}")),
        Some(d) => Err(unproven(
            format!("the installed boot loader's default entry boots {d}, not {system}"),
            Standing::SystemInstalled,
        )),
        None => Err(unproven(
            "no entry of the installed boot loader is the default (or none boots a NixOS system)",
            Standing::SystemInstalled,
        )),
    }
}

/// The installed system booted: a new boot, not the installer, and
/// `/run/booted-system` is `system`.
///
/// # Errors
/// [`Unproven`] ([`Standing::Unknown`]: whatever runs now is not the
/// installed system, or nothing answers).
pub fn first_boot(installer_boot_id: &str, waited: &Waited, system: &str) -> Result<Look, Unproven> {
    match waited {
        Waited::NewBoot(look) if look.booted_system.as_deref() == Some(system) && !has_any_marker(&look.cmdline) => {
            Ok(look.clone())
        }
        Waited::NewBoot(look) => Err(unproven(
            format!(
                "the target booted (boot id {installer_boot_id} → {}) but /run/booted-system is {}, not {system}",
                look.boot_id,
                look.booted_system.as_deref().unwrap_or("absent")
            ),
            Standing::Unknown,
        )),
        Waited::SameBoot(_) => Err(unproven(
            format!("the installer did not reboot: boot id {installer_boot_id} unchanged at the deadline"),
            Standing::SystemInstalled,
        )),
        Waited::Unreachable(e) => Err(unproven(
            format!("the installed system did not come up within the phase's deadline: {e}"),
            Standing::Unknown,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(boot: &str, cmdline: &str) -> Look {
        Look { boot_id: boot.into(), cmdline: cmdline.into(), kernel_release: "6.12.1".into(), ..Look::default() }
    }

    #[test]
    fn the_marker_must_be_a_whole_word() {
        assert!(has_param("init=/x fleetgate.install=ab panic=1", "fleetgate.install=ab"));
        assert!(!has_param("fleetgate.install=abc", "fleetgate.install=ab"));
    }

    #[test]
    fn loop_devices_are_not_disks() {
        let mut l = look("b", "");
        l.mounts = vec![
            MountLine { source: "/dev/loop0".into(), mount_point: "/nix/.ro-store".into() },
            MountLine { source: "tmpfs".into(), mount_point: "/".into() },
        ];
        assert!(disk_mounts(&l).is_empty());
        l.mounts.push(MountLine { source: "/dev/vda1".into(), mount_point: "/old".into() });
        assert_eq!(disk_mounts(&l).len(), 1);
    }

    #[test]
    fn a_kernel_other_than_the_installer_s_is_not_the_installer() {
        let before = look("a", "root=/dev/vda1");
        let after = look("b", "init=/x fleetgate.install=n");
        let e = kexec(&before, &Waited::NewBoot(after.clone()), "fleetgate.install=n", Some("6.6.6"))
            .expect_err("other kernel");
        assert_eq!(e.standing, Standing::NotTheInstaller);
        assert!(kexec(&before, &Waited::NewBoot(after), "fleetgate.install=n", Some("6.12.1")).is_ok());
    }
}
