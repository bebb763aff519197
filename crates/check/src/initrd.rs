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
    let best = req
        .candidates
        .iter()
        .min_by_key(|c| (c.missing_hard(present).len(), !c.is_builtin()));
    match best {
        None => Need {
            what,
            module: None,
            builtin: false,
            missing: Vec::new(),
            missing_soft: Vec::new(),
            device,
        },
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
                format!("the new system's kernel modules cannot be read, so its initrd cannot be checked: {e}"),
            ));
            return cov;
        }
    };
    let index = match ModuleIndex::load(&dir) {
        Ok(index) => index,
        Err(e) => {
            cov.findings.push(error("initrd.no-kernel-modules", format!("cannot read the new kernel's module metadata: {e}")));
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
                format!("the new initrd {} cannot be read: {e}", initrd_path.display()),
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
    let in_initrd: BTreeSet<String> = modules
        .files
        .iter()
        .filter(|f| f.kernel_version == kver)
        .map(|f| f.name.clone())
        .collect();
    let present = |m: &ModuleName| in_initrd.contains(m.as_str());

    let bound: Vec<&Device> = facts.root_chain.iter().filter(|d| d.driver.is_some()).collect();
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
    for device in &bound {
        let req = requirement_for(&index, device);
        if req.is_resolvable() {
            cov.needs.push(need(describe(device), true, &req, &present));
        } else {
            unresolved.push(describe(device));
        }
    }
    // The root file system's own module.
    let fs_type = new
        .root_filesystem()
        .ok()
        .and_then(|r| r.fs_type().map(str::to_owned))
        .or_else(|| facts.root.as_ref().and_then(|r| r.fs_type.clone()));
    if let Some(fs) = fs_type.filter(|fs| !matches!(fs.as_str(), "tmpfs" | "ramfs" | "rootfs" | "auto" | "none")) {
        let mut req = index.requirement_for_driver(&fs);
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
                format!(
                    "the new kernel {kver} has no module, built-in or loadable, for: {}",
                    unresolved.join("; ")
                ),
            )
            .with_fix("boot a kernel that supports this hardware (`boot.kernelPackages`)"),
        );
    }

    let evidence: Vec<String> = cov
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
        let mut top: Vec<String> = Vec::new();
        let mut all: Vec<String> = Vec::new();
        for n in &lacking {
            if let Some(m) = &n.module {
                if !top.contains(m) {
                    top.push(m.clone());
                }
            }
            for m in &n.missing {
                if !all.contains(m) {
                    all.push(m.clone());
                }
            }
        }
        let quoted: Vec<String> = top.iter().map(|m| format!("\"{m}\"")).collect();
        cov.findings.push(
            error(
                "initrd.missing-modules",
                format!(
                    "the new initrd lacks {}{} needed to reach {root_name}: stage 1 would wait forever for the root file system, and the host would not come back from a reboot",
                    top.join(", "),
                    {
                        let deps: Vec<&str> = all.iter().filter(|m| !top.contains(m)).map(String::as_str).collect();
                        if deps.is_empty() { String::new() } else { format!(" (and their dependencies {})", deps.join(", ")) }
                    }
                ),
            )
            .with_evidence(
                std::iter::once(format!("initrd: {} (kernel {kver})", initrd_path.display())).chain(evidence),
            )
            .with_fix(format!("boot.initrd.availableKernelModules = [ {} ];", quoted.join(" "))),
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
    cov
}
