//! Every finding of the root device check, each branch in both directions:
//! a device the host has is found however it is named, and one it does not
//! have is missing however many other devices, links and mounts exist.

use fleetgate_check::root::check_root;
use fleetgate_check::{Finding, Severity};
use fleetgate_facts::{BlockDevice, BlockId, Device, DiskLink, Facts, Mount, RootDevice};
use fleetgate_system::SystemToplevel;

/// A toplevel whose root is `fstab` (a `/` line) and `params`.
fn system(fstab: Option<&str>, params: &str) -> (tempfile::TempDir, SystemToplevel) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("nixos-version"), "25.05").expect("write");
    std::fs::write(dir.path().join("kernel-params"), params).expect("write");
    if let Some(fstab) = fstab {
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/fstab"), fstab).expect("write");
    }
    let s = SystemToplevel::open(dir.path()).expect("opens");
    (dir, s)
}

/// An fstab that mounts only /boot.
const BOOT_ONLY: &str = "/dev/vda1 /boot vfat defaults 0 2\n";

/// A system mounting `spec` at `/` as `fs`.
fn root_on(spec: &str, fs: &str) -> (tempfile::TempDir, SystemToplevel) {
    system(Some(&format!("{spec} / {fs} defaults 0 1\n")), "root=fstab")
}

/// A host whose `/` is on `root` (ext4), and nothing else known.
fn facts_on(root: &str) -> Facts {
    Facts {
        root: Some(RootDevice { fs_type: Some("ext4".into()), ..RootDevice::default() }),
        root_chain: vec![Device {
            sysfs: format!("/sys/devices/virtual/block/{root}"),
            subsystem: Some("block".into()),
            devname: Some(root.into()),
            ..Device::default()
        }],
        ..Facts::default()
    }
}

fn link(kind: &str, name: &str, target: &str) -> DiskLink {
    DiskLink { kind: kind.into(), name: name.into(), target: target.into() }
}

fn block(name: &str, dev: &str) -> BlockDevice {
    BlockDevice { name: name.into(), dev: Some(dev.into()), sysfs: None }
}

fn mount(point: &str, source: &str, dev: &str) -> Mount {
    Mount { mount_point: point.into(), dev: dev.into(), fs_type: "ext4".into(), source: source.into() }
}

fn id(dev: &str, tag: &str, value: &str) -> BlockId {
    BlockId { devname: dev.into(), tags: [(tag.to_owned(), value.to_owned())].into_iter().collect() }
}

fn ids(found: &[Finding]) -> Vec<(&str, Severity)> {
    found.iter().map(|f| (f.id.as_str(), f.severity)).collect()
}

fn message<'a>(found: &'a [Finding], id: &str) -> &'a str {
    found.iter().find(|f| f.id == id).map_or_else(|| panic!("no {id} in {found:#?}"), |f| f.message.as_str())
}

/// A busy host: other block devices, links and mounts, none of them `sdz2`.
fn busy_host() -> Facts {
    let mut facts = facts_on("vda2");
    facts.block_devices = vec![block("vda", "254:0"), block("vda2", "254:2"), block("sda1", "8:1")];
    facts.disk_links = vec![
        link("by-label", "NIXOS_ROOT", "/dev/vda2"),
        link("by-uuid", "1234-abcd", "/dev/vda2"),
        link("by-id", "virtio-abc-part2", "/dev/vda2"),
        link("by-path", "pci-0000:00:02.0-part2", "/dev/vda2"),
        link("by-label", "DATA", "/dev/sda1"),
    ];
    facts.mounts = vec![mount("/", "/dev/vda2", "254:2"), mount("/boot", "/dev/sda1", "8:1")];
    facts.block_ids = Some(vec![id("/dev/vda2", "LABEL", "NIXOS_ROOT"), id("/dev/sda1", "LABEL", "DATA")]);
    facts
}

#[test]
fn a_by_path_root_that_exists_is_found() {
    // The bug: the link's target was compared with the spec, not its path.
    let (_d, sys) = root_on("/dev/disk/by-path/pci-0000:00:02.0-part2", "ext4");
    let found = check_root(&sys, &busy_host());
    assert_eq!(ids(&found), [("root.device", Severity::Info)], "{found:#?}");
    assert_eq!(message(&found, "root.device"), "/dev/disk/by-path/pci-0000:00:02.0-part2 is /dev/vda2 on this host");
    // A by-path link the host does not have is missing, whatever else it has.
    let (_d, sys) = root_on("/dev/disk/by-path/pci-0000:00:09.0-part2", "ext4");
    assert_eq!(ids(&check_root(&sys, &busy_host())), [("root.device-missing", Severity::Error)]);
    // A by-path link to another device is that device.
    let (_d, sys) = root_on("/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part1", "ext4");
    let mut facts = busy_host();
    facts.disk_links.push(link("by-path", "pci-0000:00:1f.2-ata-1-part1", "/dev/sda1"));
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.other-device", Severity::Warning)], "{found:#?}");
    assert!(message(&found, "root.other-device").contains("is /dev/sda1, but / is on /dev/vda2"));
}

#[test]
fn a_plain_device_path_is_found_by_any_one_source_and_missing_from_all() {
    let (_d, sys) = root_on("/dev/vda2", "ext4");
    // Only the block-device list knows it.
    let mut facts = facts_on("vda2");
    facts.block_devices = vec![block("vda2", "254:2")];
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)]);
    // Only a link's target names it.
    let mut facts = facts_on("vda2");
    facts.disk_links = vec![link("by-uuid", "1234-abcd", "/dev/vda2")];
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)]);
    // Only a mount's source names it.
    let mut facts = facts_on("vda2");
    facts.mounts = vec![mount("/", "/dev/vda2", "254:2")];
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)]);
    // Nobody knows it, on a host with many other devices, links and mounts.
    let (_d, sys) = root_on("/dev/sdz2", "ext4");
    let found = check_root(&sys, &busy_host());
    assert_eq!(ids(&found), [("root.device-missing", Severity::Error)], "{found:#?}");
    assert!(message(&found, "root.device-missing").contains("A start job is running for /dev/sdz2"));
    // Even a host that lists nothing cannot have it.
    assert_eq!(ids(&check_root(&sys, &facts_on("vda2"))), [("root.device-missing", Severity::Error)]);
}

#[test]
fn a_mapper_path_is_the_block_device_of_its_mount() {
    // /dev/mapper names are no kernel names and no /dev/disk targets: only
    // the mount says which device (dm-0) it is.
    let (_d, sys) = root_on("/dev/mapper/vg-root", "ext4");
    let mut facts = facts_on("dm-0");
    facts.block_devices = vec![block("vda2", "254:2"), block("dm-0", "253:0")];
    facts.mounts = vec![mount("/", "/dev/mapper/vg-root", "253:0")];
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.device", Severity::Info)], "{found:#?}");
    assert_eq!(message(&found, "root.device"), "/dev/mapper/vg-root is /dev/dm-0 on this host");
    // A mount of a device the block list does not have keeps its name.
    let mut facts = facts_on("dm-0");
    facts.mounts = vec![mount("/", "/dev/mapper/vg-root", "253:0")];
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.other-device", Severity::Warning)], "{found:#?}");
    assert!(message(&found, "root.other-device").contains("is /dev/mapper/vg-root"));
    // Without the mount, nothing names it.
    let mut facts = facts_on("dm-0");
    facts.block_devices = vec![block("dm-0", "253:0")];
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)]);
}

#[test]
fn a_root_on_a_device_stage_1_cannot_see_is_missing() {
    for dev in ["loop3", "ram0", "zram0"] {
        // A label only such a device carries, by blkid or by link.
        let (_d, sys) = root_on("LABEL=root", "ext4");
        let mut facts = facts_on("vda2");
        facts.block_ids = Some(vec![id(&format!("/dev/{dev}"), "LABEL", "root")]);
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)], "{dev}");
        let mut facts = facts_on("vda2");
        facts.disk_links = vec![link("by-label", "root", &format!("/dev/{dev}"))];
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)], "{dev}");
        // Named by path, the same.
        let (_d, sys) = root_on(&format!("/dev/{dev}"), "ext4");
        let mut facts = facts_on("vda2");
        facts.block_devices = vec![block(dev, "7:3")];
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)], "{dev}");
    }
    // Names that merely contain those words are disks like any other.
    let (_d, sys) = root_on("LABEL=root", "ext4");
    let mut facts = facts_on("vda2");
    facts.block_ids = Some(vec![id("/dev/nvme0n1p2", "LABEL", "root")]);
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.other-device", Severity::Warning)]);
}

#[test]
fn labels_and_uuids_are_found_by_link_or_by_blkid() {
    for (spec, tag, value, kind) in [
        ("LABEL=NIXOS_ROOT", "LABEL", "NIXOS_ROOT", "by-label"),
        ("/dev/disk/by-label/NIXOS_ROOT", "LABEL", "NIXOS_ROOT", "by-label"),
        ("UUID=1234-abcd", "UUID", "1234-abcd", "by-uuid"),
        ("PARTLABEL=root", "PARTLABEL", "root", "by-partlabel"),
        ("PARTUUID=0011-02", "PARTUUID", "0011-02", "by-partuuid"),
    ] {
        let (_d, sys) = root_on(spec, "ext4");
        let mut facts = facts_on("vda2");
        facts.disk_links = vec![link(kind, value, "/dev/vda2")];
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)], "{spec} by link");
        let mut facts = facts_on("vda2");
        facts.block_ids = Some(vec![id("/dev/vda2", tag, value)]);
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)], "{spec} by blkid");
        // The same value under another tag or link kind is not it.
        let other_kind = if kind == "by-uuid" { "by-label" } else { "by-uuid" };
        let other_tag = if tag == "UUID" { "LABEL" } else { "UUID" };
        let mut facts = facts_on("vda2");
        facts.disk_links = vec![link(other_kind, value, "/dev/vda2")];
        facts.block_ids = Some(vec![id("/dev/vda2", other_tag, value)]);
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)], "{spec}");
    }
    // by-id names come from links only.
    let (_d, sys) = root_on("/dev/disk/by-id/virtio-abc-part2", "ext4");
    assert_eq!(ids(&check_root(&sys, &busy_host())), [("root.device", Severity::Info)]);
    let (_d, sys) = root_on("/dev/disk/by-id/virtio-gone-part2", "ext4");
    assert_eq!(ids(&check_root(&sys, &busy_host())), [("root.device-missing", Severity::Error)]);
}

#[test]
fn without_links_and_blkid_a_label_cannot_be_verified_but_is_never_fine() {
    let (_d, sys) = root_on("LABEL=root", "ext4");
    let mut facts = facts_on("vda2");
    facts.block_devices = vec![block("vda2", "254:2")];
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.device-unverified", Severity::Warning)], "{found:#?}");
    assert!(message(&found, "root.device-unverified").starts_with("LABEL=root cannot be verified"));
    // blkid ran and saw nothing: still nothing to go by.
    facts.block_ids = Some(vec![]);
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-unverified", Severity::Warning)]);
    // With either, a label nobody has is missing.
    facts.block_ids = Some(vec![id("/dev/vda2", "LABEL", "other")]);
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)]);
    let mut facts = facts_on("vda2");
    facts.disk_links = vec![link("by-uuid", "1234", "/dev/vda2")];
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device-missing", Severity::Error)]);
}

#[test]
fn several_matches_including_the_current_root_resolve_to_the_current_root() {
    let (_d, sys) = root_on("LABEL=root", "ext4");
    // `sda1` sorts before `vda2`: the current root must still win.
    let mut facts = facts_on("vda2");
    facts.block_ids = Some(vec![id("/dev/sda1", "LABEL", "root"), id("/dev/vda2", "LABEL", "root")]);
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.not-unique", Severity::Error), ("root.device", Severity::Info)], "{found:#?}");
    assert_eq!(found[0].message, "LABEL=root names 2 devices on this host: stage 1 may mount the wrong one");
    assert_eq!(found[0].evidence, ["/dev/sda1", "/dev/vda2"]);
    assert_eq!(found[1].message, "LABEL=root is /dev/vda2 on this host");
    // Through a udev link and blkid that disagree, the same, and unique.
    let mut facts = facts_on("vda2");
    facts.disk_links = vec![link("by-label", "root", "/dev/vda2")];
    facts.block_ids = Some(vec![id("/dev/sda1", "LABEL", "root")]);
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)]);
    // Only other devices: the warning stays, naming the first.
    let mut facts = facts_on("vdb1");
    facts.block_ids = Some(vec![id("/dev/vda2", "LABEL", "root"), id("/dev/vdc1", "LABEL", "root")]);
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.not-unique", Severity::Error), ("root.other-device", Severity::Warning)]);
    assert!(found[1].message.starts_with("LABEL=root is /dev/vda2, but / is on /dev/vdb1 now"), "{}", found[1].message);
    // With a loop device as the second carrier, the label is unique.
    let mut facts = facts_on("vda2");
    facts.block_ids = Some(vec![id("/dev/vda2", "LABEL", "root"), id("/dev/loop3", "LABEL", "root")]);
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)]);
}

#[test]
fn a_different_file_system_type_on_the_same_device_blocks() {
    let mut facts = busy_host();
    facts.root = Some(RootDevice { fs_type: Some("xfs".into()), ..RootDevice::default() });
    for spec in ["/dev/vda2", "LABEL=NIXOS_ROOT", "/dev/disk/by-path/pci-0000:00:02.0-part2"] {
        let (_d, sys) = root_on(spec, "ext4");
        let found = check_root(&sys, &facts);
        assert_eq!(
            ids(&found),
            [("root.device", Severity::Info), ("root.fs-type-differs", Severity::Error)],
            "{spec}: {found:#?}"
        );
        let f = &found[1];
        assert_eq!(f.message, "the new system mounts / as ext4, but the device holds xfs");
        assert_eq!(f.fix.as_deref(), Some("set `fileSystems.\"/\".fsType = \"xfs\";`"));
    }
    // The same type, `auto`, or an unknown type on either side: nothing.
    for (new_fs, cur_fs) in [("xfs", Some("xfs")), ("auto", Some("xfs")), ("ext4", None)] {
        let (_d, sys) = root_on("/dev/vda2", new_fs);
        let mut facts = busy_host();
        facts.root = Some(RootDevice { fs_type: cur_fs.map(str::to_owned), ..RootDevice::default() });
        assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)], "{new_fs} on {cur_fs:?}");
    }
    let (_d, sys) = system(Some(BOOT_ONLY), "root=/dev/vda2");
    let mut facts = busy_host();
    facts.root = Some(RootDevice { fs_type: Some("xfs".into()), ..RootDevice::default() });
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.device", Severity::Info)], "root= without rootfstype=");
    let (_d, sys) = system(Some(BOOT_ONLY), "root=/dev/vda2 rootfstype=btrfs");
    assert_eq!(
        ids(&check_root(&sys, &facts)),
        [("root.device", Severity::Info), ("root.fs-type-differs", Severity::Error)]
    );
    // Another device than the current root: its type is not known here.
    let (_d, sys) = root_on("/dev/sda1", "ext4");
    assert_eq!(ids(&check_root(&sys, &facts)), [("root.other-device", Severity::Warning)]);
}

#[test]
fn a_missing_device_names_what_the_current_root_is_known_as() {
    let (_d, sys) = root_on("/dev/disk/by-label/NIXOS_ROOT", "ext4");
    let mut facts = busy_host();
    facts.disk_links.retain(|l| l.name != "NIXOS_ROOT");
    facts.block_ids = Some(vec![]);
    facts.disk_links.push(link("by-partuuid", "0011-02", "/dev/vda2"));
    facts.disk_links.push(link("by-partlabel", "primary", "/dev/vda2"));
    let found = check_root(&sys, &facts);
    assert_eq!(ids(&found), [("root.device-missing", Severity::Error)], "{found:#?}");
    let f = &found[0];
    assert_eq!(
        f.message,
        "LABEL=NIXOS_ROOT does not exist on this host: stage 1 would wait forever (\"A start job is running for /dev/disk/by-label/NIXOS_ROOT\")"
    );
    assert_eq!(
        f.evidence,
        [
            "new root: LABEL=NIXOS_ROOT (from etc/fstab)",
            "/ is on /dev/vda2 now, known as: /dev/disk/by-uuid/1234-abcd, /dev/disk/by-partuuid/0011-02, /dev/disk/by-partlabel/primary",
        ]
    );
    assert!(f.fix.as_deref().is_some_and(|x| x.contains("fileSystems.\"/\".device")));
    // From root=, and a root with no persistent names at all.
    let (_d, sys) = system(Some(BOOT_ONLY), "root=LABEL=gone");
    let mut facts = facts_on("vda2");
    facts.disk_links = vec![link("by-id", "virtio-abc", "/dev/vda2"), link("by-label", "x", "/dev/vdb1")];
    let found = check_root(&sys, &facts);
    assert_eq!(
        found[0].evidence,
        ["new root: LABEL=gone (from root=)", "/ is on /dev/vda2 now, known as: (no persistent names)"]
    );
    // A host whose root is unknown: only the new root is evidence.
    let facts = Facts { disk_links: vec![link("by-label", "x", "/dev/vdb1")], ..Facts::default() };
    let found = check_root(&sys, &facts);
    assert_eq!(found[0].evidence, ["new root: LABEL=gone (from root=)"]);
}

#[test]
fn what_is_not_a_block_device_or_not_there_is_said_so() {
    let (_d, sys) = root_on("tmpfs", "tmpfs");
    let found = check_root(&sys, &busy_host());
    assert_eq!(ids(&found), [("root.not-a-block-device", Severity::Info)]);
    assert_eq!(found[0].message, "the new root is tmpfs, not a block device: its presence is not checked");
    let (_d, sys) = system(Some(BOOT_ONLY), "root=fstab");
    let found = check_root(&sys, &busy_host());
    assert_eq!(ids(&found), [("root.none", Severity::Error)]);
    let (_d, sys) = system(None, "root=fstab");
    let found = check_root(&sys, &busy_host());
    assert_eq!(ids(&found), [("root.unreadable", Severity::Error)]);
    assert!(found[0].message.contains("etc/fstab"), "{}", found[0].message);
    let (_d, sys) = system(Some("/dev/vda2 / ext4 defaults 0 1\nlonely\n"), "root=fstab");
    assert_eq!(ids(&check_root(&sys, &busy_host())), [("root.unreadable", Severity::Error)]);
}
