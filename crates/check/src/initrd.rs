//! Initrd driver coverage: does the new initrd hold every module the host's
//! root device chain and root file system need, per the new kernel's own
//! module metadata?

use std::collections::BTreeSet;
use std::path::Path;

use fleetgate_facts::{Device, Facts, Finding, Severity};
use fleetgate_kmod::{ModuleIndex, ModuleName, Provider, Requirement};
use fleetgate_system::SystemToplevel;

use crate::error_chain;
use crate::memo::Memo;
use crate::prefetch::{IndexRead, InitrdRead, Prefetch};

/// The module metadata of the kernels checked so far (see [`crate::memo`]).
static MODULE_INDEXES: Memo<ModuleIndex> = Memo::new();
/// The kernel modules of the initrds checked so far.
static INITRD_MODULES: Memo<fleetgate_initrd::KernelModules> = Memo::new();

/// The new kernel's module metadata in `dir` (kept: [`crate::memo`]).
pub(crate) fn read_module_index(dir: &Path) -> IndexRead {
    MODULE_INDEXES.get_or_read(dir, || ModuleIndex::load(dir))
}

/// The kernel modules inside the initrd at `path` (kept: [`crate::memo`]).
pub(crate) fn read_initrd_modules(path: &Path) -> InitrdRead {
    INITRD_MODULES.get_or_read(path, || fleetgate_initrd::kernel_modules(path))
}

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
///
/// A candidate the kernel names (by an alias) but has neither as a file
/// nor built in means the metadata contradicts itself: depmod writes
/// aliases only of modules it lists. Such candidates are never chosen; when
/// there is no other, the module's name is the error, for
/// `initrd.module-metadata-unusable` — never "missing from the initrd".
fn need(what: String, device: bool, req: &Requirement, present: &dyn Fn(&ModuleName) -> bool) -> Result<Need, String> {
    let known = req.candidates.iter().filter(|c| c.provider != Provider::Missing);
    match known.min_by_key(|c| (c.missing_hard(present).len(), !c.is_builtin())) {
        Some(c) => Ok(Need {
            what,
            module: Some(c.module.as_str().to_owned()),
            builtin: c.is_builtin(),
            missing: c.missing_hard(present).iter().map(|m| m.as_str().to_owned()).collect(),
            missing_soft: c.missing_soft(present).iter().map(|m| m.as_str().to_owned()).collect(),
            device,
        }),
        None => Err(req.candidates.iter().map(|c| c.module.as_str()).collect::<Vec<_>>().join(", ")),
    }
}

/// Why the new kernel's module metadata cannot be judged by, if it cannot:
/// lines depmod never writes, or files that contradict each other. A
/// module list computed from such files would be wrong.
fn metadata_damage(index: &ModuleIndex) -> Option<(String, Vec<String>)> {
    let damaged: Vec<String> = index
        .skipped_lines()
        .iter()
        .filter(|l| l.is_damage())
        .map(|l| format!("{}:{}: {} ({:?})", l.file, l.line, l.reason, l.text.chars().take(80).collect::<String>()))
        .collect();
    if !damaged.is_empty() {
        let reason = format!("{} of its lines are not what depmod writes", damaged.len());
        return Some((reason, damaged.into_iter().take(10).collect()));
    }
    let (modules, aliases) = (index.module_count(), index.alias_count());
    let builtin = index.builtin_modules().count();
    let counts = vec![format!(
        "modules.dep: {modules} modules, modules.alias: {aliases} aliases, modules.builtin: {builtin} modules"
    )];
    if modules == 0 && (aliases > 0 || builtin == 0) {
        return Some(("modules.dep lists no module".to_owned(), counts));
    }
    if modules > 0 && aliases == 0 {
        return Some(("modules.alias has no alias, so no device can be matched to its driver".to_owned(), counts));
    }
    None
}

/// `initrd.module-metadata-unusable`: the verdict cannot be had from this
/// metadata.
fn metadata_unusable(dir: &std::path::Path, reason: &str) -> Finding {
    error(
        "initrd.module-metadata-unusable",
        format!(
            "cannot judge the new initrd: the new kernel's module metadata in {} is unusable: {reason}",
            dir.display()
        ),
    )
    .with_fix("rebuild the kernel's module tree (`depmod`), or check `boot.kernelPackages` and `system.modulesTree`")
}

/// The initrd driver coverage check.
#[must_use]
pub fn check_coverage(new: &SystemToplevel, facts: &Facts) -> Coverage {
    check_coverage_prefetched(new, facts, &mut Prefetch::none())
}

/// [`check_coverage`], taking the module metadata and the initrd's listing
/// from `prefetch` where it read the same paths ([`crate::prefetch`]).
pub fn check_coverage_prefetched(new: &SystemToplevel, facts: &Facts, prefetch: &mut Prefetch) -> Coverage {
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
    let index = match prefetch.module_index(&dir).unwrap_or_else(|| read_module_index(&dir)) {
        Ok(index) => index,
        Err(e) => {
            cov.findings.push(error(
                "initrd.no-kernel-modules",
                format!("cannot read the new kernel's module metadata: {}", error_chain(&e)),
            ));
            return cov;
        }
    };
    if let Some((reason, evidence)) = metadata_damage(&index) {
        cov.findings.push(metadata_unusable(&dir, &reason).with_evidence(evidence));
        return cov;
    }
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
    let modules = match prefetch.initrd_modules(initrd_path).unwrap_or_else(|| read_initrd_modules(initrd_path)) {
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
            metadata: &dir,
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
    /// The kernel's modules directory, for evidence.
    metadata: &'a std::path::Path,
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
    let Inputs { index, kver, in_initrd, initrd, metadata, fs_type } = *input;
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
    let mut contradictions = Vec::new();
    let mut notes = Vec::new();
    for device in facts.root_chain.iter().filter(|d| d.driver.is_some()) {
        if is_pci_bridge(device) {
            notes
                .push(format!("{} → PCI bridge: the devices behind it work without a driver for it", describe(device)));
            continue;
        }
        let req = requirement_for(index, device);
        if req.is_resolvable() {
            match need(describe(device), true, &req, &present) {
                Ok(n) => cov.needs.push(n),
                Err(modules) => contradictions.push(format!("{} → {modules}", describe(device))),
            }
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
            match need(format!("file system {fs}"), false, &req, &present) {
                Ok(n) => cov.needs.push(n),
                Err(modules) => contradictions.push(format!("file system {fs} → {modules}")),
            }
        } else {
            unresolved.push(format!("file system {fs}"));
        }
    }
    if !contradictions.is_empty() {
        cov.findings.push(
            metadata_unusable(metadata, "modules.alias names modules that are neither in modules.dep nor built in")
                .with_evidence(contradictions.iter().cloned()),
        );
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
        // "Every module needed" only when every need was resolved.
        if !cov.needs.is_empty() && unresolved.is_empty() && contradictions.is_empty() {
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

#[cfg(test)]
mod tests;
