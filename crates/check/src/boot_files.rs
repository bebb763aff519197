//! Boot files: what the boot loader hands to the firmware and the kernel
//! must exist and be what it claims to be, before anything else about the
//! system matters.
//!
//! * the kernel: a regular file holding a kernel image of the system's
//!   architecture (`fleetgate-system`'s `kernel_image`);
//! * `init`: the stage-2 init every boot entry names (`init=<toplevel>/init`),
//!   a regular, executable file;
//! * the kernel's modules (`kernel-modules/lib/modules/<release>`) for the
//!   release the kernel image states (x86 states it in its boot header);
//! * `boot.json` agreeing with the toplevel's own files: systemd-boot's
//!   builder (`systemd-boot-builder.py`) boots the bootspec's `kernel`,
//!   `initrd`, `init` and `kernelParams`, GRUB's (`install-grub.pl`) the
//!   toplevel's `kernel`, `initrd`, `init` and `kernel-params`; when they
//!   differ, what is checked here is not what one of them boots.
//!
//! The initrd itself is checked by [`crate::initrd`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fleetgate_facts::{Finding, Severity};
use fleetgate_system::{KernelFormat, SystemError, SystemToplevel};

fn error(id: &str, message: impl Into<String>) -> Finding {
    Finding::new(id, Severity::Error, message)
}

/// The boot files check.
#[must_use]
pub fn check_boot_files(new: &SystemToplevel) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(check_kernel(new));
    out.extend(check_init(new));
    out.extend(check_bootspec(new));
    out
}

fn check_kernel(new: &SystemToplevel) -> Vec<Finding> {
    let missing = |message: String| {
        vec![error("boot.kernel-missing", message).with_fix(
            "build the system again; its `kernel` must be the kernel package's image (`boot.kernelPackages`)",
        )]
    };
    let Some(path) = new.kernel_path() else {
        return missing("the new system has no kernel: no `kernel` link and no `kernel` in boot.json".to_owned());
    };
    let image = match new.kernel_image() {
        Ok(image) => image,
        Err(SystemError::File(e)) if e.is_not_found() => {
            return missing(format!("the new system's kernel {} does not exist", path.display()));
        }
        Err(e) => return missing(format!("the new system's kernel cannot be used: {}", crate::error_chain(&e))),
    };
    let system = new.system().or_else(|| new.bootspec_v1().map(|b| b.system.as_str()));
    let formats = system.and_then(KernelFormat::for_system);
    let Some(image) = image else {
        let expected = formats.map_or_else(
            || "a Linux kernel image (x86 bzImage, arm64 or RISC-V Image, EFI zboot, ARM zImage)".to_owned(),
            |f| f.iter().map(|f| f.name()).collect::<Vec<_>>().join(" or "),
        );
        return missing(format!("the new system's kernel {} is not {expected}", path.display()));
    };
    let mut out = Vec::new();
    if let (Some(system), Some(formats)) = (system, formats) {
        if !formats.contains(&image.format) {
            out.extend(missing(format!(
                "the new system's kernel {} is an {}, which {system} systems cannot boot",
                path.display(),
                image.format.name()
            )));
        }
    }
    if let (Some(release), Ok(modules)) = (&image.release, new.kernel_version()) {
        if *release != modules {
            out.push(
                error(
                    "boot.modules-version-mismatch",
                    format!(
                        "the new kernel is {release}, but its kernel-modules are for {modules}: modprobe would find no module, and stage 1 none of its drivers"
                    ),
                )
                .with_evidence([format!("kernel: {}", path.display()), format!("kernel-modules: lib/modules/{modules}")])
                .with_fix("build `kernel` and `kernel-modules` from the same kernel package (`boot.kernelPackages`)"),
            );
        }
    }
    out
}

fn check_init(new: &SystemToplevel) -> Option<Finding> {
    let path = new.path().join("init");
    let problem = match std::fs::metadata(&path) {
        Err(_) if path.symlink_metadata().is_ok() => "is a link to nothing".to_owned(),
        Err(_) => "does not exist".to_owned(),
        Ok(meta) if !meta.is_file() => format!("is {}", fleetgate_files::FileKind::of(meta.file_type())),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => "is not executable".to_owned(),
        Ok(_) => return None,
    };
    Some(
        error(
            "boot.init-missing",
            format!(
                "the new system's init {} {problem}: every boot entry starts it (init={}), and stage 1 would fail to switch to it",
                path.display(),
                path.display()
            ),
        )
        .with_fix("build the system again: `init` is part of every NixOS system (`system.build.toplevel`)"),
    )
}

/// Whether two paths name the same file: equal, or equal once resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
}

fn check_bootspec(new: &SystemToplevel) -> Option<Finding> {
    let spec = new.bootspec_v1()?;
    let mut differences = Vec::new();
    let mut compare = |what: &str, in_spec: &Path, own: Option<std::path::PathBuf>| match own {
        Some(own) if !same_file(in_spec, &own) => {
            differences.push(format!("{what}: boot.json says {}, the system has {}", in_spec.display(), own.display()));
        }
        _ => {}
    };
    compare("kernel", &spec.kernel, new.entry("kernel"));
    if let Some(initrd) = &spec.initrd {
        compare("initrd", initrd, new.entry("initrd"));
    }
    compare("init", &spec.init, Some(new.path().join("init")));
    compare("toplevel", &spec.toplevel.0, Some(new.path().to_path_buf()));
    if let Some(file) = new.kernel_params_file() {
        let in_spec: Vec<&str> = spec.kernel_params.iter().flat_map(|p| p.split_whitespace()).collect();
        if in_spec != file {
            differences.push(format!(
                "kernel parameters: boot.json says {:?}, kernel-params says {:?}",
                in_spec.join(" "),
                file.join(" ")
            ));
        }
    }
    if differences.is_empty() {
        return None;
    }
    Some(
        error(
            "boot.bootspec-mismatch",
            "the new system's boot.json disagrees with its own files: systemd-boot boots what boot.json says, GRUB what the files say, so what was checked is not what one of them boots",
        )
        .with_evidence(differences)
        .with_fix("build the system again (boot.json is generated with the toplevel); do not edit a built system"),
    )
}
