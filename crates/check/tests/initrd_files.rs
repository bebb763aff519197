//! The initrd and module files around the coverage check, on Debian's real
//! kernel metadata: which initrd versions count, and every way the files
//! can be unusable — each a finding, none a hang.

mod support;

use std::path::Path;

use fleetgate_check::Severity;
use support::{check_toplevel, debian_kernel, debian_system, small_initrd, virtio_facts};

fn ids(report: &fleetgate_check::Report) -> Vec<&str> {
    report.findings.iter().map(|f| f.id.as_str()).collect()
}

fn system_with(initrd: &Path) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let s = debian_system(Some(initrd));
    (s.dir, s.top, s.kver)
}

#[test]
fn only_modules_of_the_new_kernels_version_count() {
    let kver = debian_kernel();
    let scratch = tempfile::tempdir().expect("tempdir");
    // No lib/modules at all: no version to disagree with, and nothing there.
    let none = small_initrd(&scratch.path().join("none"), &["etc/hostname".to_owned()]);
    let (_d, top, _) = system_with(&none);
    let report = check_toplevel(&top, &virtio_facts());
    assert!(!ids(&report).contains(&"initrd.kernel-version-mismatch"), "{report:#?}");
    assert!(ids(&report).contains(&"initrd.missing-modules"), "{report:#?}");
    // The right version next to another one: no mismatch, and virtio_blk
    // under the other version does not count.
    let both = small_initrd(
        &scratch.path().join("both"),
        &[
            format!("lib/modules/{kver}/kernel/drivers/virtio/virtio_ring.ko"),
            "lib/modules/5.10.0-99-amd64/kernel/drivers/block/virtio_blk.ko".to_owned(),
        ],
    );
    let (_d, top, _) = system_with(&both);
    let report = check_toplevel(&top, &virtio_facts());
    assert!(!ids(&report).contains(&"initrd.kernel-version-mismatch"), "{report:#?}");
    let missing = report.findings_with_id("initrd.missing-modules").next().expect("missing");
    assert!(missing.message.starts_with("the new initrd lacks virtio_blk, virtio_pci"), "{}", missing.message);
    assert!(!missing.message.contains("virtio_ring,"), "virtio_ring is there: {}", missing.message);
}

#[test]
fn an_initrd_that_is_no_file_no_image_or_absent_is_named() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let garbage = scratch.path().join("initrd.garbage");
    std::fs::write(&garbage, b"this is not an initramfs").expect("write");
    let mut cases: Vec<(std::path::PathBuf, &str)> =
        fleetgate_files::testing::hostile_files(scratch.path(), "initrd").into();
    cases.push((garbage, "bad magic at file byte 0"));
    for (initrd, says) in cases {
        let (_d, top, _) = system_with(&initrd);
        let report = check_toplevel(&top, &virtio_facts());
        let f = report.findings_with_id("initrd.unreadable").next().unwrap_or_else(|| panic!("{report:#?}"));
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains(says), "{}: {}", initrd.display(), f.message);
        assert!(!ids(&report).contains(&"initrd.coverage"));
    }
    // No initrd at all (no link, no bootspec entry).
    let kver = debian_kernel();
    let (_d, top, _) = system_with(Path::new(&format!("/boot/initrd.img-{kver}")));
    std::fs::remove_file(top.join("initrd")).expect("rm");
    std::fs::remove_file(top.join("boot.json")).expect("rm");
    let report = check_toplevel(&top, &virtio_facts());
    assert!(ids(&report).contains(&"initrd.missing"), "{report:#?}");
}

#[test]
fn missing_module_files_are_named() {
    let kver = debian_kernel();
    let (_d, top, _) = system_with(Path::new(&format!("/boot/initrd.img-{kver}")));
    let modules = top.join("kernel-modules/lib/modules");
    // No modules.builtin: built-in drivers would look missing, so say so.
    let dir = modules.join(&kver);
    std::fs::remove_file(&dir).expect("rm link");
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(format!("/lib/modules/{kver}")).expect("read_dir").map(Result::unwrap) {
        if entry.file_name() != "modules.builtin" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).expect("link");
        }
    }
    let report = check_toplevel(&top, &virtio_facts());
    assert!(ids(&report).contains(&"initrd.no-builtin-list"), "{report:#?}");
    assert!(ids(&report).contains(&"initrd.coverage"), "{report:#?}");
    // No modules.dep: the module metadata cannot be read.
    std::fs::remove_file(dir.join("modules.dep")).expect("rm");
    let report = check_toplevel(&top, &virtio_facts());
    let f = report.findings_with_id("initrd.no-kernel-modules").next().unwrap_or_else(|| panic!("{report:#?}"));
    assert!(f.message.contains("modules.dep is missing"), "{}", f.message);
    // No kernel-modules at all.
    std::fs::remove_file(top.join("kernel-modules")).ok();
    std::fs::remove_dir_all(top.join("kernel-modules")).ok();
    let report = check_toplevel(&top, &virtio_facts());
    assert!(ids(&report).contains(&"initrd.no-kernel-modules"), "{report:#?}");
}
