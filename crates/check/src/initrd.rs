//! Initrd driver coverage: does the new initrd hold every module the host's
//! root device chain and root file system need, per the new kernel's own
//! module metadata?

use std::collections::BTreeSet;

use fleetgate_facts::{Device, Facts, Finding, Severity};
use fleetgate_kmod::{ModuleIndex, ModuleName, Requirement};
use fleetgate_system::SystemToplevel;

/// What one device (or the file system) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// What needs it: `virtio1 (virtio:d00000002v00001AF4)`, `file system ext4`.
    pub what: String,
    /// The module that drives it (the candidate chosen), if the kernel knows one.
    pub module: Option<String>,
    /// Built into the new kernel.
    pub builtin: bool,
    /// Hard modules (dependencies and the module) missing from the initrd.
    pub missing: Vec<String>,
    /// Softdep modules missing from the initrd.
    pub missing_soft: Vec<String>,
    /// A device on the chain (not the file system, whose module NixOS adds
    /// by itself from `fileSystems`).
    pub device: bool,
}

/// The result of [`check_coverage`].
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// What each device on the chain needs.
    pub needs: Vec<Need>,
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Coverage {
    /// Modules that drive the devices of the chain (not built in): what
    /// `boot.initrd.availableKernelModules` must contain. The file system's
    /// module is not listed: NixOS adds it from `fileSystems`.
    #[must_use]
    pub fn root_modules(&self) -> Vec<String> {
        let mut out = Vec::new();
        for need in self.needs.iter().filter(|n| n.device) {
            if let Some(m) = &need.module {
                if !need.builtin && !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
        out
    }
}

fn error(id: &str, message: impl Into<String>) -> Finding {
    Finding::new(id, Severity::Error, message)
}

/// How a device's driver is found in the new kernel: by the module the
/// running kernel bound (`driver/module`), else by the driver's name, else
/// by the device's modalias (a driver built into the running kernel has no
/// module link, and may be a module in the new one).
fn requirement_for(index: &ModuleIndex, device: &Device) -> Requirement {
    if let Some(module) = &device.module {
        let r = index.requirement_for_driver(module);
        if r.is_resolvable() {
            return r;
        }
    }
    if let Some(driver) = &device.driver {
        let r = index.requirement_for_driver(driver);
        if r.is_resolvable() {
            return r;
        }
    }
    match &device.modalias {
        Some(alias) => index.requirement(alias),
        None => index.requirement_for_driver(device.driver.as_deref().unwrap_or("")),
    }
}

fn describe(device: &Device) -> String {
    let mut s = device.name().to_owned();
    if let Some(alias) = &device.modalias {
        s.push_str(&format!(" ({alias})"));
    }
    if let Some(driver) = &device.driver {
        s.push_str(&format!(", driver {driver}"));
    }
    s
}

/// Builds what a requirement lacks, choosing the candidate closest to
/// complete (a built-in or complete one wins).
fn need(what: String, device: bool, req: &Requirement, present: &dyn Fn(&ModuleName) -> bool) -> Need {
    let best = req.candidates.iter().min_by_key(|c| (c.missing_hard(present).len(), !c.is_builtin()));
    match best {
        None => Need { what, module: None, builtin: false, missing: Vec::new(), missing_soft: Vec::new(), device },
        Some(c) => Need {
            what,
            module: Some(c.module.as_str().to_owned()),
            builtin: c.is_builtin(),
            missing: c.missing_hard(present).iter().map(|m| m.as_str().to_owned()).collect(),
            missing_soft: c.missing_soft(present).iter().map(|m| m.as_str().to_owned()).collect(),
            device,
        },
    }
}

/// The initrd driver coverage check.
#[must_use]
pub fn check_coverage(new: &SystemToplevel, facts: &Facts) -> Coverage {
    let mut cov = Coverage::default();
    let dir = match new.kernel_modules_dir() {
        Ok(dir) => dir,
        Err(e) => {
            cov.findings.push(error(
                "initrd.no-kernel-modules",
                format!(
                    "the new system's kernel modules cannot be read, so its initrd cannot be checked: {}",
                    error_chain(&e)
                ),
            ));
            return cov;
        }
    };
    let index = match ModuleIndex::load(&dir) {
        Ok(index) => index,
        Err(e) => {
            cov.findings.push(error(
                "initrd.no-kernel-modules",
                format!("cannot read the new kernel's module metadata: {}", error_chain(&e)),
            ));
            return cov;
        }
    };
    let kver = index.kernel_version().unwrap_or_default().to_owned();
    if index.absent_files().contains(&"modules.builtin") {
        cov.findings.push(Finding::new(
            "initrd.no-builtin-list",
            Severity::Warning,
            format!("{} has no modules.builtin: a driver built into the kernel would look missing", dir.display()),
        ));
    }
    let Some(initrd_path) = new.initrd_path() else {
        cov.findings.push(error("initrd.missing", "the new system has no initrd"));
        return cov;
    };
    let modules = match fleetgate_initrd::kernel_modules(initrd_path) {
        Ok(m) => m,
        Err(e) => {
            cov.findings.push(error(
                "initrd.unreadable",
                format!("the new initrd {} cannot be read: {}", initrd_path.display(), error_chain(&e)),
            ));
            return cov;
        }
    };
    if !modules.kernel_versions.is_empty() && !modules.kernel_versions.contains(&kver) {
        cov.findings.push(
            error(
                "initrd.kernel-version-mismatch",
                format!(
                    "the new initrd carries modules for kernel {} but the new kernel is {kver}: none of them can load",
                    modules.kernel_versions.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .with_evidence([format!("initrd: {}", initrd_path.display()), format!("kernel modules: {}", dir.display())])
            .with_fix("build the initrd from the same kernel package as `boot.kernelPackages`"),
        );
    }
    let in_initrd: BTreeSet<String> =
        modules.files.iter().filter(|f| f.kernel_version == kver).map(|f| f.name.clone()).collect();
    let fs_type = new
        .root_filesystem()
        .ok()
        .and_then(|r| r.fs_type().map(str::to_owned))
        .or_else(|| facts.root.as_ref().and_then(|r| r.fs_type.clone()));
    assess(
        &mut cov,
        &Inputs {
            index: &index,
            kver: &kver,
            in_initrd: &in_initrd,
            initrd: &initrd_path.display().to_string(),
            fs_type: fs_type.as_deref(),
        },
        facts,
    );
    cov
}

/// What [`assess`] works from: the new kernel's metadata and what its initrd holds.
struct Inputs<'a> {
    index: &'a ModuleIndex,
    kver: &'a str,
    /// Module names in the initrd, for `kver`.
    in_initrd: &'a BTreeSet<String>,
    /// The initrd, for evidence.
    initrd: &'a str,
    /// The new root file system's type.
    fs_type: Option<&'a str>,
}

/// The PCI class of a `pci:` modalias (`…bc06sc04i00` → `(0x06, 0x04)`).
fn pci_class(modalias: &str) -> Option<(u8, u8)> {
    let rest = modalias.strip_prefix("pci:")?;
    let bc = rest.find("bc")?;
    let class = rest.get(bc + 2..bc + 4)?;
    let sub = rest.get(bc + 4..)?.strip_prefix("sc")?.get(..2)?;
    Some((u8::from_str_radix(class, 16).ok()?, u8::from_str_radix(sub, 16).ok()?))
}

/// A PCI-to-PCI bridge (class 0x0604: PCIe root and downstream ports,
/// switches). The PCI core enumerates the devices behind a bridge without
/// any driver bound to it; `pcieport` only adds services (AER, hotplug,
/// power management), so a bridge never needs a module in the initrd.
fn is_pci_bridge(device: &Device) -> bool {
    device.subsystem.as_deref() == Some("pci") && device.modalias.as_deref().and_then(pci_class) == Some((0x06, 0x04))
}

/// Whether `device` belongs to the root disk's own controller: no other
/// bound PCI function of the chain sits below it in sysfs (which would make
/// it a bridge or bus in front of the controller, not the controller).
fn is_own_controller(chain: &[Device], device: &Device) -> bool {
    let prefix = format!("{}/", device.sysfs);
    !chain.iter().any(|e| e.driver.is_some() && e.subsystem.as_deref() == Some("pci") && e.sysfs.starts_with(&prefix))
}

/// Resolves every bound device of the chain and the file system through the
/// new kernel, and adds the findings.
fn assess(cov: &mut Coverage, input: &Inputs<'_>, facts: &Facts) {
    let Inputs { index, kver, in_initrd, initrd, fs_type } = *input;
    let present = |m: &ModuleName| in_initrd.contains(m.as_str());

    if facts.root_chain.is_empty() {
        cov.findings.push(
            error(
                "initrd.root-chain-unknown",
                "the host's root device chain is unknown, so it cannot be shown that the new initrd reaches it",
            )
            .with_fix("collect facts as root on the host itself (`fleetgate facts --target …`) with /sys mounted"),
        );
    }
    let mut unresolved = Vec::new();
    let mut unverified = Vec::new();
    let mut notes = Vec::new();
    for device in facts.root_chain.iter().filter(|d| d.driver.is_some()) {
        if is_pci_bridge(device) {
            notes
                .push(format!("{} → PCI bridge: the devices behind it work without a driver for it", describe(device)));
            continue;
        }
        let req = requirement_for(index, device);
        if req.is_resolvable() {
            cov.needs.push(need(describe(device), true, &req, &present));
        } else if device.module.is_none() && !is_own_controller(&facts.root_chain, device) {
            // Built into the running kernel, and the new kernel names it
            // nowhere: drivers that cannot be modules (bool options) are in
            // neither modules.builtin nor modules.alias, so this proves
            // nothing either way.
            unverified.push(describe(device));
        } else {
            unresolved.push(describe(device));
        }
    }
    // The root file system's own module.
    if let Some(fs) = fs_type.filter(|fs| !matches!(*fs, "tmpfs" | "ramfs" | "rootfs" | "auto" | "none")) {
        let mut req = index.requirement_for_driver(fs);
        if !req.is_resolvable() {
            req = index.requirement(&format!("fs-{fs}"));
        }
        if req.is_resolvable() {
            cov.needs.push(need(format!("file system {fs}"), false, &req, &present));
        } else {
            unresolved.push(format!("file system {fs}"));
        }
    }
    if !unresolved.is_empty() {
        cov.findings.push(
            error(
                "initrd.no-driver",
                format!("the new kernel {kver} has no module, built-in or loadable, for: {}", unresolved.join("; ")),
            )
            .with_fix("boot a kernel that supports this hardware (`boot.kernelPackages`)"),
        );
    }
    if !unverified.is_empty() {
        cov.findings.push(
            Finding::new(
                "initrd.driver-unverified",
                Severity::Warning,
                format!(
                    "the running kernel has the driver built in, and the new kernel {kver} names no module or built-in for it, so the new kernel may lack it: {}",
                    unverified.join("; ")
                ),
            )
            .with_evidence([
                "drivers that can only be built in (bool options) appear in neither modules.builtin nor modules.alias".to_owned(),
            ])
            .with_fix("make sure the new kernel's configuration enables these drivers (`boot.kernelPackages`, `boot.kernelPatches`)"),
        );
    }

    let mut evidence: Vec<String> = cov
        .needs
        .iter()
        .map(|n| {
            let module = n.module.as_deref().unwrap_or("?");
            if n.builtin {
                format!("{} → {module}: built into the kernel", n.what)
            } else if n.missing.is_empty() {
                format!("{} → {module}: in the initrd", n.what)
            } else {
                format!("{} → {module}: MISSING from the initrd ({})", n.what, n.missing.join(", "))
            }
        })
        .collect();
    evidence.extend(notes);
    let lacking: Vec<&Need> = cov.needs.iter().filter(|n| !n.missing.is_empty()).collect();
    let root_name = facts.root_block_name().map_or_else(|| "the root device".to_owned(), |n| format!("/dev/{n}"));
    if lacking.is_empty() {
        if !cov.needs.is_empty() {
            cov.findings.push(
                Finding::new(
                    "initrd.coverage",
                    Severity::Info,
                    format!("the new initrd has every module needed to mount {root_name} (kernel {kver})"),
                )
                .with_evidence(evidence),
            );
        }
    } else {
        cov.findings.push(
            error("initrd.missing-modules", missing_message(&lacking, &root_name))
                .with_evidence(std::iter::once(format!("initrd: {initrd} (kernel {kver})")).chain(evidence))
                .with_fix(format!(
                    "boot.initrd.availableKernelModules = [ {} ];",
                    lacking_drivers(&lacking).iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(" ")
                )),
        );
    }
    let soft: BTreeSet<&String> = cov.needs.iter().flat_map(|n| n.missing_soft.iter()).collect();
    if !soft.is_empty() {
        let names: Vec<&str> = soft.iter().map(|s| s.as_str()).collect();
        cov.findings.push(
            Finding::new(
                "initrd.missing-softdeps",
                Severity::Warning,
                format!(
                    "the new initrd lacks soft dependencies of the root modules: {}; they load without them but may not work fully",
                    names.join(", ")
                ),
            )
            .with_fix(format!(
                "boot.initrd.availableKernelModules = [ {} ];",
                names.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(" ")
            )),
        );
    }
}

/// The driver modules of the needs that lack something, in chain order:
/// what `boot.initrd.availableKernelModules` must list (NixOS adds their
/// dependencies itself).
fn lacking_drivers(lacking: &[&Need]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in lacking.iter().filter_map(|n| n.module.as_ref()) {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// Names exactly the modules missing from the initrd: the driver modules
/// first, then their dependencies; a driver module that is there but whose
/// dependencies are not is named as needing them, never as missing.
fn missing_message(lacking: &[&Need], root_name: &str) -> String {
    let drivers = lacking_drivers(lacking);
    let mut missing: Vec<&str> = Vec::new();
    for n in lacking {
        for m in &n.missing {
            if !missing.contains(&m.as_str()) {
                missing.push(m);
            }
        }
    }
    let (absent_drivers, present_drivers): (Vec<&str>, Vec<&str>) =
        drivers.iter().map(String::as_str).partition(|d| missing.contains(d));
    let deps: Vec<&str> = missing.iter().copied().filter(|m| !absent_drivers.contains(m)).collect();
    let what = if absent_drivers.is_empty() {
        format!(
            "{} (dependencies of {}, which {} there without them)",
            deps.join(", "),
            present_drivers.join(", "),
            if present_drivers.len() == 1 { "is" } else { "are" }
        )
    } else {
        let mut what = absent_drivers.join(", ");
        if !deps.is_empty() {
            what.push_str(&format!(" (and their dependencies {})", deps.join(", ")));
        }
        if !present_drivers.is_empty() {
            what.push_str(&format!(
                "; {} {} there but not all {} dependencies",
                present_drivers.join(", "),
                if present_drivers.len() == 1 { "is" } else { "are" },
                if present_drivers.len() == 1 { "its" } else { "their" }
            ));
        }
        what
    };
    format!(
        "the new initrd lacks {what} needed to reach {root_name}: stage 1 would wait forever for the root file system, and the host would not come back from a reboot"
    )
}

/// An error and its causes on one line (`a: b: c`), for finding messages.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use fleetgate_kmod::IndexSources;

    use super::*;

    const KVER: &str = "6.1.0-56-amd64";

    fn index() -> ModuleIndex {
        ModuleIndex::from_parts(IndexSources {
            kernel_version: Some(KVER),
            modules_dep: "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
                          kernel/drivers/nvme/host/nvme-core.ko:\n\
                          kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n\
                          kernel/fs/jbd2/jbd2.ko:\n",
            modules_alias: "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias fs-ext4 ext4\n",
            ..IndexSources::default()
        })
    }

    fn device(
        sysfs: &str,
        subsystem: &str,
        driver: Option<&str>,
        module: Option<&str>,
        modalias: Option<&str>,
    ) -> Device {
        Device {
            sysfs: sysfs.to_owned(),
            subsystem: Some(subsystem.to_owned()),
            driver: driver.map(str::to_owned),
            module: module.map(str::to_owned),
            modalias: modalias.map(str::to_owned),
            devname: None,
        }
    }

    const PORT: &str = "/sys/devices/pci0000:00/0000:00:1c.0";
    const NVME: &str = "/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0";

    /// An NVMe namespace behind a PCIe root port, as the lab and real
    /// machines show it.
    fn nvme_facts(port: Device) -> Facts {
        Facts {
            root_chain: vec![
                Device {
                    devname: Some("nvme0n1p2".into()),
                    ..device(
                        "/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/nvme0n1p2",
                        "block",
                        None,
                        None,
                        None,
                    )
                },
                device(&format!("{NVME}/nvme/nvme0"), "nvme", None, None, None),
                device(
                    NVME,
                    "pci",
                    Some("nvme"),
                    Some("nvme"),
                    Some("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
                ),
                port,
            ],
            ..Facts::default()
        }
    }

    fn assess_with(facts: &Facts, initrd: &[&str]) -> Coverage {
        let index = index();
        let in_initrd: BTreeSet<String> = initrd.iter().map(|m| (*m).to_owned()).collect();
        let mut cov = Coverage::default();
        assess(
            &mut cov,
            &Inputs { index: &index, kver: KVER, in_initrd: &in_initrd, initrd: "/initrd", fs_type: Some("ext4") },
            facts,
        );
        cov
    }

    fn ids(cov: &Coverage) -> Vec<(&str, Severity)> {
        cov.findings.iter().map(|f| (f.id.as_str(), f.severity)).collect()
    }

    #[test]
    fn pci_classes_come_from_the_modalias() {
        assert_eq!(pci_class("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"), Some((0x06, 0x04)));
        assert_eq!(pci_class("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"), Some((0x01, 0x08)));
        assert_eq!(pci_class("virtio:d00000002v00001AF4"), None);
    }

    #[test]
    fn a_pcie_root_port_with_a_built_in_driver_does_not_block_the_nvme_behind_it() {
        let port =
            device(PORT, "pci", Some("pcieport"), None, Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"));
        let cov = assess_with(&nvme_facts(port), &["nvme", "nvme_core", "ext4", "jbd2"]);
        assert_eq!(ids(&cov), [("initrd.coverage", Severity::Info)], "{:#?}", cov.findings);
        let evidence = cov.findings[0].evidence.join("\n");
        assert!(evidence.contains("driver nvme → nvme: in the initrd"), "{evidence}");
        assert!(evidence.contains("0000:00:1c.0") && evidence.contains("PCI bridge"), "{evidence}");
        assert_eq!(cov.needs.iter().filter(|n| n.device).count(), 1, "the bridge needs nothing: {:#?}", cov.needs);
        // Removing the controller's driver still blocks.
        let cov = assess_with(
            &nvme_facts(device(
                PORT,
                "pci",
                Some("pcieport"),
                None,
                Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"),
            )),
            &["ext4", "jbd2"],
        );
        assert!(ids(&cov).contains(&("initrd.missing-modules", Severity::Error)), "{:#?}", cov.findings);
    }

    #[test]
    fn an_unknown_built_in_driver_above_the_controller_warns_and_on_the_controller_blocks() {
        // Not a bridge, built into the running kernel, unknown to the new one.
        let upstream =
            device(PORT, "pci", Some("mystery"), None, Some("pci:v00001234d00005678sv00000000sd00000000bc08sc80i00"));
        let cov = assess_with(&nvme_facts(upstream), &["nvme", "nvme_core", "ext4", "jbd2"]);
        assert_eq!(
            ids(&cov),
            [("initrd.driver-unverified", Severity::Warning), ("initrd.coverage", Severity::Info)],
            "{:#?}",
            cov.findings
        );
        assert!(cov.findings[0].message.contains("mystery"), "{}", cov.findings[0].message);
        // The root disk's own controller, built in and unknown: blocked.
        let mut facts = nvme_facts(device(
            PORT,
            "pci",
            Some("pcieport"),
            None,
            Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"),
        ));
        facts.root_chain[2] = device(
            NVME,
            "pci",
            Some("mystery-nvme"),
            None,
            Some("pci:v00001234d00005678sv00000000sd00000000bc01sc80i00"),
        );
        let cov = assess_with(&facts, &["ext4", "jbd2"]);
        assert_eq!(ids(&cov).first(), Some(&("initrd.no-driver", Severity::Error)), "{:#?}", cov.findings);
        // A driver that was a module on the running host and is gone: blocked too.
        facts.root_chain[2] = device(
            NVME,
            "pci",
            Some("gone"),
            Some("gone"),
            Some("pci:v00001234d00005678sv00000000sd00000000bc01sc80i00"),
        );
        facts.root_chain.push(device("/sys/devices/pci0000:00", "pci", Some("other"), None, None));
        let cov = assess_with(&facts, &["ext4", "jbd2"]);
        assert_eq!(ids(&cov).first(), Some(&("initrd.no-driver", Severity::Error)), "{:#?}", cov.findings);
    }

    #[test]
    fn missing_modules_names_only_what_is_missing() {
        let port =
            device(PORT, "pci", Some("pcieport"), None, Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"));
        // nvme is there, only its dependency nvme_core is not.
        let cov = assess_with(&nvme_facts(port.clone()), &["nvme", "ext4", "jbd2"]);
        let f = cov.findings.iter().find(|f| f.id == "initrd.missing-modules").expect("missing modules");
        assert!(
            f.message.starts_with("the new initrd lacks nvme_core (dependencies of nvme, which is there without them)"),
            "{}",
            f.message
        );
        assert_eq!(f.fix.as_deref(), Some(r#"boot.initrd.availableKernelModules = [ "nvme" ];"#));
        // Both missing: the driver first, then its dependency.
        let cov = assess_with(&nvme_facts(port), &["ext4", "jbd2"]);
        let f = cov.findings.iter().find(|f| f.id == "initrd.missing-modules").expect("missing modules");
        assert!(
            f.message.starts_with("the new initrd lacks nvme (and their dependencies nvme_core) needed"),
            "{}",
            f.message
        );
    }
}
