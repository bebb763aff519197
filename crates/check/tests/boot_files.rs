//! The boot files of a system — kernel, init, the kernel's modules, and
//! boot.json — must exist and be what they claim, or the plan is blocked
//! with a finding that names what is wrong. Real data: Debian's kernel
//! image and modules, laid out as a NixOS toplevel (`support::toplevel`).

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use fleetgate_check::boot_files::check_boot_files;
use fleetgate_check::{Decision, Finding, Severity};
use fleetgate_system::SystemToplevel;
use support::{DebianSystem, check_toplevel, debian_system, virtio_facts};

/// Debian's kernel, modules and initrd: a system that boots on the virtio VM.
fn fixture() -> DebianSystem {
    debian_system(None)
}

fn findings(top: &Path) -> Vec<Finding> {
    check_boot_files(&SystemToplevel::open(top).expect("opens"))
}

fn only(found: &[Finding], id: &str) -> String {
    assert_eq!(found.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [id], "{found:#?}");
    assert_eq!(found[0].severity, Severity::Error);
    found[0].message.clone()
}

/// Replaces the toplevel's entry `name` with a link to `target`.
fn relink(top: &Path, name: &str, target: &Path) {
    std::fs::remove_file(top.join(name)).expect("rm");
    symlink(target, top.join(name)).expect("link");
}

/// Removes boot.json, so the files alone are looked at.
fn without_bootspec(top: &Path) {
    std::fs::remove_file(top.join("boot.json")).expect("rm");
}

#[test]
fn debians_kernel_modules_and_init_are_fine() {
    let f = fixture();
    assert_eq!(findings(&f.top), []);
    let report = check_toplevel(&f.top, &virtio_facts());
    assert_eq!(report.decision, Decision::Boot, "{report:#?}");
}

#[test]
fn a_system_without_a_kernel_is_blocked_not_judged_bootable() {
    let f = fixture();
    without_bootspec(&f.top);
    std::fs::remove_file(f.top.join("kernel")).expect("rm");
    let message = only(&findings(&f.top), "boot.kernel-missing");
    assert!(message.contains("has no kernel"), "{message}");
    // The whole check: blocked, where it used to say "it will boot".
    let report = check_toplevel(&f.top, &virtio_facts());
    assert_eq!(report.decision, Decision::Blocked, "{report:#?}");
    assert!(report.findings_with_id("boot.kernel-missing").next().is_some());
}

#[test]
fn a_kernel_that_is_not_a_kernel_image_is_named() {
    let f = fixture();
    without_bootspec(&f.top);
    let dir = f.dir.path();
    std::fs::write(dir.join("empty"), b"").expect("write");
    std::fs::write(dir.join("script"), b"#!/bin/sh\necho bzImage\n").expect("write");
    let mut arm64 = vec![0u8; 0x100];
    arm64[0x38..0x3C].copy_from_slice(b"ARM\x64");
    std::fs::write(dir.join("Image"), &arm64).expect("write");
    std::fs::create_dir(dir.join("a-directory")).expect("mkdir");
    for (target, says) in [
        (dir.join("gone"), "does not exist".to_owned()),
        (dir.join("empty"), format!("{} is not x86 bzImage", dir.join("empty").display())),
        (dir.join("script"), "is not x86 bzImage".to_owned()),
        (dir.join("Image"), "is an arm64 Image, which x86_64-linux systems cannot boot".to_owned()),
        (dir.join("a-directory"), "is a directory, not a regular file".to_owned()),
        (PathBuf::from("/dev/zero"), "/dev/zero is a character device, not a regular file".to_owned()),
    ] {
        relink(&f.top, "kernel", &target);
        let message = only(&findings(&f.top), "boot.kernel-missing");
        assert!(message.contains(&says), "{}: {message}", target.display());
    }
    // Without a `system` file the bootspec's system decides; without
    // either, any kernel image format is accepted but garbage is not.
    std::fs::remove_file(f.top.join("system")).expect("rm");
    relink(&f.top, "kernel", &dir.join("Image"));
    assert_eq!(findings(&f.top), []);
    relink(&f.top, "kernel", &dir.join("script"));
    let message = only(&findings(&f.top), "boot.kernel-missing");
    assert!(message.contains("is not a Linux kernel image"), "{message}");
}

#[test]
fn modules_for_another_release_than_the_kernels_are_blocked() {
    let f = fixture();
    let modules = f.top.join("kernel-modules/lib/modules");
    std::fs::rename(modules.join(&f.kver), modules.join("6.6.1")).expect("rename");
    let message = only(&findings(&f.top), "boot.modules-version-mismatch");
    assert_eq!(
        message,
        format!(
            "the new kernel is {}, but its kernel-modules are for 6.6.1: modprobe would find no module, and stage 1 none of its drivers",
            f.kver
        )
    );
}

#[test]
fn init_must_be_an_executable_file() {
    let f = fixture();
    let init = f.top.join("init");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(only(&findings(&f.top), "boot.init-missing").contains("is not executable"));
    std::fs::remove_file(&init).expect("rm");
    assert!(only(&findings(&f.top), "boot.init-missing").contains("does not exist"));
    symlink("/nonexistent/init", &init).expect("link");
    assert!(only(&findings(&f.top), "boot.init-missing").contains("is a link to nothing"));
    std::fs::remove_file(&init).expect("rm");
    std::fs::create_dir(&init).expect("mkdir");
    assert!(only(&findings(&f.top), "boot.init-missing").contains("is a directory"));
    std::fs::remove_dir(&init).expect("rm");
    symlink("/bin/sh", &init).expect("link");
    assert_eq!(findings(&f.top), [], "a link to an executable is fine");
}

#[test]
fn boot_json_that_disagrees_with_the_files_is_blocked() {
    let edit = |top: &Path, key: &str, value: serde_json::Value| {
        let path = top.join("boot.json");
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        doc["org.nixos.bootspec.v1"][key] = value;
        std::fs::write(&path, doc.to_string()).expect("write");
    };
    for (key, value, evidence) in [
        ("kernel", serde_json::json!("/boot/vmlinuz-9.9.9"), "kernel: boot.json says /boot/vmlinuz-9.9.9"),
        ("initrd", serde_json::json!("/boot/initrd.img-9.9.9"), "initrd: boot.json says /boot/initrd.img-9.9.9"),
        (
            "init",
            serde_json::json!("/nix/store/other-system/init"),
            "init: boot.json says /nix/store/other-system/init",
        ),
        ("toplevel", serde_json::json!("/nix/store/other-system"), "toplevel: boot.json says /nix/store/other-system"),
        (
            "kernelParams",
            serde_json::json!(["root=fstab", "loglevel=7"]),
            "kernel parameters: boot.json says \"root=fstab loglevel=7\", kernel-params says \"root=fstab loglevel=4\"",
        ),
    ] {
        let f = fixture();
        edit(&f.top, key, value);
        let found = findings(&f.top);
        only(&found, "boot.bootspec-mismatch");
        assert_eq!(found[0].evidence.len(), 1, "{found:#?}");
        assert!(found[0].evidence[0].starts_with(evidence), "{key}: {:?}", found[0].evidence);
    }
    // The same file by another spelling is no difference.
    let f = fixture();
    let kernel = std::fs::canonicalize(f.top.join("kernel")).expect("resolves");
    edit(&f.top, "kernel", serde_json::json!(kernel));
    assert_eq!(findings(&f.top), []);
}
