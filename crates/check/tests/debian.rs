//! Real data: Debian's own kernel modules tree and the initrd its
//! `mkinitramfs` made on this machine, checked against the facts of a
//! virtio VM (root ext4 on a virtio disk `/dev/vda`, the virtio drivers
//! built into its kernel; `crates/facts/tests/fixtures/virtio-vm.facts.json`)
//! and, for what holds anywhere, this machine's live facts.

use std::path::Path;

use fleetgate_check::{Decision, Severity};

mod support;

use support::{check_toplevel, debian_kernel, debian_system, local_facts, small_initrd, toplevel, virtio_facts};

#[test]
fn debians_initrd_covers_a_virtio_vms_root_chain() {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let top =
        toplevel(dir.path(), &kver, Path::new(&format!("/boot/initrd.img-{kver}")), "/dev/vda / ext4 defaults 0 1\n");
    let report = check_toplevel(&top, &virtio_facts());
    let coverage = report.findings_with_id("initrd.coverage").next().unwrap_or_else(|| panic!("{report:#?}"));
    let evidence = coverage.evidence.join("\n");
    // The running kernel has these drivers built in; Debian's kernel has
    // them as modules, and its initrd (MODULES=most) carries them.
    assert!(evidence.contains("virtio_blk → virtio_blk: in the initrd"), "{evidence}");
    assert!(evidence.contains("virtio_pci: in the initrd"), "{evidence}");
    assert!(evidence.contains("file system ext4 → ext4: in the initrd"), "{evidence}");
    assert!(report.findings_with_id("root.device").next().is_some(), "{report:#?}");
    // Not NixOS: no current system, so only `boot` is possible.
    assert_eq!(report.decision, Decision::Boot, "{report:#?}");
    assert!(report.findings_with_id("switch.no-current-system").next().is_some());
}

#[test]
fn an_initrd_without_the_virtio_drivers_is_blocked_by_name() {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = format!("usr/lib/modules/{kver}/kernel");
    let initrd = small_initrd(
        dir.path(),
        &[
            format!("{base}/fs/ext4/ext4.ko"),
            format!("{base}/fs/jbd2/jbd2.ko"),
            format!("{base}/fs/mbcache.ko"),
            format!("{base}/lib/crc16.ko"),
            format!("{base}/crypto/crc32c_generic.ko"),
            format!("{base}/drivers/virtio/virtio.ko"),
        ],
    );
    let top = toplevel(dir.path(), &kver, &initrd, "/dev/vda / ext4 defaults 0 1\n");
    let report = check_toplevel(&top, &virtio_facts());
    assert_eq!(report.decision, Decision::Blocked);
    let missing = report.findings_with_id("initrd.missing-modules").next().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(missing.severity, Severity::Error);
    assert_eq!(missing.fix.as_deref(), Some(r#"boot.initrd.availableKernelModules = [ "virtio_blk" "virtio_pci" ];"#));
    assert!(missing.message.contains("virtio_ring"), "dependencies named: {}", missing.message);
    assert!(!missing.message.contains("ext4"), "{}", missing.message);
}

#[test]
fn an_initrd_for_another_kernel_version_is_an_error() {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd =
        small_initrd(dir.path(), &["lib/modules/5.10.0-99-amd64/kernel/drivers/block/virtio_blk.ko".to_owned()]);
    let top = toplevel(dir.path(), &kver, &initrd, "/dev/vda / ext4 defaults 0 1\n");
    let report = check_toplevel(&top, &virtio_facts());
    assert_eq!(report.decision, Decision::Blocked);
    let mismatch =
        report.findings_with_id("initrd.kernel-version-mismatch").next().unwrap_or_else(|| panic!("{report:#?}"));
    assert!(mismatch.message.contains("5.10.0-99-amd64") && mismatch.message.contains(&kver), "{}", mismatch.message);
    // The module of the wrong version does not count as present.
    assert!(report.findings_with_id("initrd.missing-modules").next().is_some());
}

#[test]
fn a_root_label_the_host_does_not_have_is_blocked() {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let top = toplevel(
        dir.path(),
        &kver,
        Path::new(&format!("/boot/initrd.img-{kver}")),
        "/dev/disk/by-label/NIXOS_ROOT / ext4 defaults 0 1\n",
    );
    let mut facts = virtio_facts();
    // As on a host with udev: the root is known by UUID only.
    facts.disk_links =
        vec![fleetgate_facts::DiskLink { kind: "by-uuid".into(), name: "1234-abcd".into(), target: "/dev/vda".into() }];
    facts.block_ids = Some(vec![]);
    let report = check_toplevel(&top, &facts);
    assert_eq!(report.decision, Decision::Blocked);
    let missing = report.findings_with_id("root.device-missing").next().unwrap_or_else(|| panic!("{report:#?}"));
    assert!(
        missing.message.contains("A start job is running for /dev/disk/by-label/NIXOS_ROOT"),
        "{}",
        missing.message
    );
    assert!(missing.evidence.iter().any(|e| e.contains("/dev/disk/by-uuid/1234-abcd")), "{:?}", missing.evidence);
}

#[test]
fn duplicate_labels_are_blocked() {
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let top =
        toplevel(dir.path(), &kver, Path::new(&format!("/boot/initrd.img-{kver}")), "LABEL=root / ext4 defaults 0 1\n");
    let mut facts = virtio_facts();
    let id = |dev: &str| fleetgate_facts::BlockId {
        devname: dev.into(),
        tags: [("LABEL".to_owned(), "root".to_owned())].into_iter().collect(),
    };
    // Loop devices do not exist in stage 1 and do not count.
    facts.block_ids = Some(vec![id("/dev/vda"), id("/dev/vdb1"), id("/dev/loop3")]);
    let report = check_toplevel(&top, &facts);
    let dup = report.findings_with_id("root.not-unique").next().unwrap_or_else(|| panic!("{report:#?}"));
    assert_eq!(dup.evidence, ["/dev/vda", "/dev/vdb1"]);
    assert_eq!(report.decision, Decision::Blocked);
}

#[test]
fn this_machines_live_facts_give_a_verdict() {
    // Whatever the disk: the check runs through, resolves the chain through
    // Debian's kernel, and says something about the initrd and the switch.
    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let facts = local_facts();
    let source = facts.root.as_ref().and_then(|r| r.source.clone()).unwrap_or_else(|| "/dev/root".into());
    let fs = facts.root.as_ref().and_then(|r| r.fs_type.clone()).unwrap_or_else(|| "ext4".into());
    let top = toplevel(
        dir.path(),
        &kver,
        Path::new(&format!("/boot/initrd.img-{kver}")),
        &format!("{source} / {fs} defaults 0 1\n"),
    );
    let report = check_toplevel(&top, &facts);
    assert!(report.findings.iter().any(|f| f.id.starts_with("initrd.")), "{report:#?}");
    assert!(report.findings.iter().any(|f| f.id.starts_with("switch.")), "{report:#?}");
    assert!(!report.next_step.is_empty());
}

/// The toplevel's modules directory becomes a directory of links to
/// Debian's, with `modules.dep` replaced by `dep`.
fn with_modules_dep(top: &Path, kver: &str, dep: &[u8]) {
    let dir = top.join("kernel-modules/lib/modules").join(kver);
    std::fs::remove_file(&dir).expect("rm link");
    std::fs::create_dir(&dir).expect("mkdir");
    for entry in std::fs::read_dir(format!("/lib/modules/{kver}")).expect("read_dir").map(Result::unwrap) {
        if entry.file_name() != "modules.dep" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).expect("link");
        }
    }
    std::fs::write(dir.join("modules.dep"), dep).expect("write");
}

#[test]
fn broken_module_metadata_is_its_own_finding_never_a_wrong_module_list() {
    let kver = debian_kernel();
    let real = std::fs::read_to_string(format!("/lib/modules/{kver}/modules.dep")).expect("modules.dep");
    // Debian's modules.dep without the virtio lines: modules.alias still
    // names virtio_blk, which modules.dep then does not know.
    let without_virtio: String = real.lines().filter(|l| !l.contains("virtio")).map(|l| format!("{l}\n")).collect();
    for (case, dep) in [
        ("empty", Vec::new()),
        ("garbage", b"\x7fELF\x02\x01\x01\0garbage\nmore garbage without a colon\n".to_vec()),
        ("truncated line", format!("{real}kernel/drivers/block/virtio_blk.ko.xz kernel/driv").into_bytes()),
        ("contradicting modules.alias", without_virtio.into_bytes()),
    ] {
        let system = debian_system(None);
        with_modules_dep(&system.top, &kver, &dep);
        let report = check_toplevel(&system.top, &virtio_facts());
        assert_eq!(report.decision, Decision::Blocked, "{case}: {report:#?}");
        let unusable = report
            .findings_with_id("initrd.module-metadata-unusable")
            .next()
            .unwrap_or_else(|| panic!("{case}: {report:#?}"));
        assert_eq!(unusable.severity, Severity::Error);
        assert!(unusable.message.starts_with("cannot judge the new initrd"), "{case}: {}", unusable.message);
        // The initrd does hold virtio_blk, virtio_pci and ext4: nothing may
        // say it lacks them.
        assert!(report.findings_with_id("initrd.missing-modules").next().is_none(), "{case}: {report:#?}");
        assert!(report.findings_with_id("initrd.coverage").next().is_none(), "{case}: {report:#?}");
    }
}

/// `fleetgate check` reads the new system's module metadata and initrd while
/// the facts are read (`fleetgate_check::prefetch`): the report is the one a
/// check without it gives — for the real Debian initrd, for an initrd that
/// lacks the drivers, and when the prefetch read another system's initrd
/// (the check reads its own).
#[test]
fn a_prefetched_check_reports_what_a_check_reports() {
    use fleetgate_check::{Options, Prefetch, check, check_prefetched};
    use fleetgate_system::SystemToplevel;

    let kver = debian_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let fstab = "/dev/vda / ext4 defaults 0 1\n";
    let real = toplevel(&dir.path().join("real"), &kver, Path::new(&format!("/boot/initrd.img-{kver}")), fstab);
    let small_dir = dir.path().join("small");
    let base = format!("usr/lib/modules/{kver}/kernel");
    let driverless = small_initrd(&small_dir, &[format!("{base}/fs/ext4/ext4.ko")]);
    let small = toplevel(&small_dir, &kver, &driverless, fstab);
    let options = Options { no_closure_diff: true, ..Options::default() };
    let facts = virtio_facts();
    let open = |top: &Path| SystemToplevel::open(top).expect("opens");

    let mut reports = Vec::new();
    for top in [&real, &small] {
        let system = open(top);
        let prefetched = check_prefetched(&system, &facts, &options, Prefetch::start(&system));
        let report = check(&system, &facts, &options);
        assert_eq!(prefetched, report);
        reports.push(report);
    }
    assert_eq!(reports[0].decision, Decision::Boot, "{:#?}", reports[0]);
    assert_eq!(reports[1].decision, Decision::Blocked, "{:#?}", reports[1]);
    assert!(reports[1].findings_with_id("initrd.missing-modules").next().is_some(), "{:#?}", reports[1]);
    // The driverless system's prefetch is not taken for the real one.
    let report = check_prefetched(&open(&real), &facts, &options, Prefetch::start(&open(&small)));
    assert_eq!(report, reports[0]);
}
