//! Root device: the new system's root must name a device that exists on the
//! host, unambiguously.

use std::collections::BTreeSet;

use fleetgate_facts::{Facts, Finding, Severity};
use fleetgate_system::{RootSpec, SystemToplevel};

/// Devices stage 1 never sees: loop devices, RAM disks and zram exist only
/// once the running system made them.
fn seen_at_boot(devname: &str) -> bool {
    let name = devname.rsplit('/').next().unwrap_or(devname);
    !(name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram"))
}

/// The `/dev/disk` directory and `blkid` tag for a spec.
fn kind_of(spec: &RootSpec) -> Option<(&'static str, &'static str, &str)> {
    match spec {
        RootSpec::Label(v) => Some(("by-label", "LABEL", v)),
        RootSpec::PartLabel(v) => Some(("by-partlabel", "PARTLABEL", v)),
        RootSpec::Uuid(v) => Some(("by-uuid", "UUID", v)),
        RootSpec::PartUuid(v) => Some(("by-partuuid", "PARTUUID", v)),
        RootSpec::Id(v) => Some(("by-id", "", v)),
        RootSpec::Path(_) | RootSpec::Other(_) => None,
    }
}

fn short(dev: &str) -> &str {
    dev.strip_prefix("/dev/").unwrap_or(dev)
}

/// The root device check.
#[must_use]
pub fn check_root(new: &SystemToplevel, facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let rootfs = match new.root_filesystem() {
        Ok(r) => r,
        Err(e) => {
            out.push(Finding::new(
                "root.unreadable",
                Severity::Error,
                format!("the new system's root file system cannot be read: {e}"),
            ));
            return out;
        }
    };
    let Some(spec) = rootfs.device() else {
        out.push(Finding::new(
            "root.none",
            Severity::Error,
            "the new system mounts nothing at / (no `/` line in etc/fstab and no root= parameter)",
        ));
        return out;
    };
    let wait_unit = spec.device_path().map_or_else(|| spec.to_string(), |p| p.display().to_string());
    let current_root = facts.root_block_name().map(str::to_owned);

    // Devices the spec resolves to, from udev links and from blkid.
    let mut found: BTreeSet<String> = BTreeSet::new();
    let mut from_blkid: BTreeSet<String> = BTreeSet::new();
    let have_links = !facts.disk_links.is_empty();
    let have_blkid = facts.block_ids.as_ref().is_some_and(|b| !b.is_empty());
    match &spec {
        RootSpec::Other(what) => {
            out.push(Finding::new(
                "root.not-a-block-device",
                Severity::Info,
                format!("the new root is {what}, not a block device: its presence is not checked"),
            ));
            return out;
        }
        RootSpec::Path(path) => {
            let text = path.display().to_string();
            let name = short(&text);
            if facts.block_devices.iter().any(|b| b.name == name)
                || facts.disk_links.iter().any(|l| l.target == text)
                || facts.mounts.iter().any(|m| m.source == text)
            {
                let target = facts
                    .disk_links
                    .iter()
                    .find(|l| format!("/dev/disk/{}/{}", l.kind, l.name) == text)
                    .map_or(name.to_owned(), |l| short(&l.target).to_owned());
                found.insert(target);
            }
        }
        spec => {
            if let Some((dir, tag, value)) = kind_of(spec) {
                for link in facts.disk_links.iter().filter(|l| l.kind == dir) {
                    if RootSpec::parse(&format!("/dev/disk/{}/{}", link.kind, link.name)) == *spec {
                        found.insert(short(&link.target).to_owned());
                    }
                }
                if !tag.is_empty() {
                    for id in facts.block_ids.iter().flatten() {
                        if id.tags.get(tag).map(String::as_str) == Some(value) && seen_at_boot(&id.devname) {
                            from_blkid.insert(short(&id.devname).to_owned());
                        }
                    }
                }
            }
        }
    }
    found.extend(from_blkid.iter().cloned());

    if from_blkid.len() > 1 {
        out.push(
            Finding::new(
                "root.not-unique",
                Severity::Error,
                format!(
                    "{spec} names {} devices on this host: stage 1 may mount the wrong one",
                    from_blkid.len()
                ),
            )
            .with_evidence(from_blkid.iter().map(|d| format!("/dev/{d}")))
            .with_fix("give the root file system a unique label (`e2label`/`tune2fs -L`) or name it by UUID in `fileSystems.\"/\".device`"),
        );
    }
    // When the spec matches several devices and the current root is one of
    // them, that is the one checked (the driver check covered its chain).
    let chosen: Option<&String> =
        found.iter().find(|d| Some(d.as_str()) == current_root.as_deref()).or_else(|| found.iter().next());
    match chosen {
        None if have_links || have_blkid || matches!(spec, RootSpec::Path(_)) => {
            let mut evidence =
                vec![format!("new root: {spec} (from {})", if rootfs.fstab.is_some() { "etc/fstab" } else { "root=" })];
            if let Some(cur) = &current_root {
                let names: Vec<String> = facts
                    .disk_links
                    .iter()
                    .filter(|l| {
                        short(&l.target) == cur
                            && matches!(l.kind.as_str(), "by-label" | "by-uuid" | "by-partlabel" | "by-partuuid")
                    })
                    .map(|l| format!("/dev/disk/{}/{}", l.kind, l.name))
                    .collect();
                evidence.push(format!(
                    "/ is on /dev/{cur} now, known as: {}",
                    if names.is_empty() { "(no persistent names)".to_owned() } else { names.join(", ") }
                ));
            }
            out.push(
                Finding::new(
                    "root.device-missing",
                    Severity::Error,
                    format!(
                        "{spec} does not exist on this host: stage 1 would wait forever (\"A start job is running for {wait_unit}\")"
                    ),
                )
                .with_evidence(evidence)
                .with_fix("set `fileSystems.\"/\".device` to a name the host has (see `fleetgate facts`), e.g. \"/dev/disk/by-uuid/…\""),
            );
        }
        None => out.push(Finding::new(
            "root.device-unverified",
            Severity::Warning,
            format!("{spec} cannot be verified: the host has no /dev/disk links and no blkid"),
        )),
        Some(dev) => {
            if current_root.as_deref().is_some_and(|cur| cur != dev) {
                out.push(
                    Finding::new(
                        "root.other-device",
                        Severity::Warning,
                        format!(
                            "{spec} is /dev/{dev}, but / is on /dev/{} now: the driver check covered the current root device's chain",
                            current_root.as_deref().unwrap_or("?")
                        ),
                    )
                    .with_fix("make sure the new root device is reachable with the same drivers"),
                );
            } else {
                out.push(Finding::new("root.device", Severity::Info, format!("{spec} is /dev/{dev} on this host")));
            }
        }
    }
    if let (Some(new_fs), Some(cur_fs)) = (rootfs.fs_type(), facts.root.as_ref().and_then(|r| r.fs_type.as_deref())) {
        let same_device = chosen.is_some_and(|d| Some(d.as_str()) == current_root.as_deref());
        if same_device && new_fs != cur_fs && new_fs != "auto" {
            out.push(
                Finding::new(
                    "root.fs-type-differs",
                    Severity::Error,
                    format!("the new system mounts / as {new_fs}, but the device holds {cur_fs}"),
                )
                .with_fix(format!("set `fileSystems.\"/\".fsType = \"{cur_fs}\";`")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use fleetgate_facts::{BlockId, Device, DiskLink};

    use super::*;

    fn system(fstab: &str) -> (tempfile::TempDir, SystemToplevel) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("nixos-version"), "25.05").expect("write");
        std::fs::write(dir.path().join("kernel-params"), "root=fstab").expect("write");
        std::fs::write(dir.path().join("etc/fstab"), fstab).expect("write");
        let s = SystemToplevel::open(dir.path()).expect("opens");
        (dir, s)
    }

    fn facts_on(root: &str) -> Facts {
        Facts {
            root_chain: vec![Device {
                sysfs: format!("/sys/devices/virtual/block/{root}"),
                subsystem: Some("block".into()),
                devname: Some(root.into()),
                ..Device::default()
            }],
            ..Facts::default()
        }
    }

    fn id(dev: &str, label: &str) -> BlockId {
        BlockId { devname: dev.into(), tags: [("LABEL".to_owned(), label.to_owned())].into_iter().collect() }
    }

    fn ids(found: &[Finding]) -> Vec<&str> {
        found.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn several_matches_including_the_current_root_resolve_to_the_current_root() {
        let (_d, sys) = system("LABEL=root / ext4 defaults 0 1\n");
        // `sda1` sorts before `vda2`: the current root must still win.
        let mut facts = facts_on("vda2");
        facts.block_ids = Some(vec![id("/dev/sda1", "root"), id("/dev/vda2", "root")]);
        let found = check_root(&sys, &facts);
        assert_eq!(ids(&found), ["root.not-unique", "root.device"], "{found:#?}");
        assert_eq!(found[1].message, "LABEL=root is /dev/vda2 on this host");
        // Through a udev link and blkid that disagree, the same.
        let mut facts = facts_on("vda2");
        facts.disk_links = vec![DiskLink { kind: "by-label".into(), name: "root".into(), target: "/dev/vda2".into() }];
        facts.block_ids = Some(vec![id("/dev/sda1", "root")]);
        assert_eq!(ids(&check_root(&sys, &facts)), ["root.device"]);
        // Only other devices: the warning stays.
        let mut facts = facts_on("vdb1");
        facts.block_ids = Some(vec![id("/dev/vda2", "root")]);
        assert_eq!(ids(&check_root(&sys, &facts)), ["root.other-device"]);
    }
}
