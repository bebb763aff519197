//! Root device: the new system's root must name a device that exists on the
//! host, unambiguously, and be mounted with the type the device holds.
//!
//! How a spec is found on the host, by kind:
//!
//! * `LABEL=`, `UUID=`, `PARTLABEL=`, `PARTUUID=`, `ID=` and their
//!   `/dev/disk/by-*` forms: the host's `/dev/disk/by-*` links of that kind,
//!   and `blkid`'s tags (a label or UUID carried by several devices is
//!   ambiguous: `root.not-unique`);
//! * any other `/dev/disk/<dir>/<name>` (`by-path`, `by-diskseq`, …): the
//!   link of that path, which names the device it points to;
//! * a plain device path (`/dev/vda2`, `/dev/mapper/vg-root`): a block
//!   device of that kernel name, a `/dev/disk` link's target, or a mount's
//!   source (`/dev/mapper/…` is only known that way), which names the block
//!   device of the mount's device number.
//!
//! Devices stage 1 cannot see (loop devices, RAM disks, zram) never count.

use std::collections::BTreeSet;

use fleetgate_facts::{Facts, Finding, Severity};
use fleetgate_system::{RootFilesystem, RootSpec, SystemToplevel};

/// Devices stage 1 never sees: loop devices, RAM disks and zram exist only
/// once the running system made them.
fn seen_at_boot(devname: &str) -> bool {
    let name = devname.rsplit('/').next().unwrap_or(devname);
    !(name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram"))
}

/// The `blkid` tag and value of a spec (`by-id` names have none).
fn blkid_tag(spec: &RootSpec) -> Option<(&'static str, &str)> {
    match spec {
        RootSpec::Label(v) => Some(("LABEL", v)),
        RootSpec::PartLabel(v) => Some(("PARTLABEL", v)),
        RootSpec::Uuid(v) => Some(("UUID", v)),
        RootSpec::PartUuid(v) => Some(("PARTUUID", v)),
        RootSpec::Id(_) | RootSpec::Path(_) | RootSpec::Other(_) => None,
    }
}

fn short(dev: &str) -> &str {
    dev.strip_prefix("/dev/").unwrap_or(dev)
}

/// The devices (kernel names, `vda2`) a spec names on the host.
#[derive(Debug, Default)]
struct Resolved {
    /// From every source.
    found: BTreeSet<String>,
    /// From `blkid` alone: more than one is ambiguous.
    from_blkid: BTreeSet<String>,
    /// Whether the host tells enough to say a device is missing.
    verifiable: bool,
}

fn resolve(spec: &RootSpec, facts: &Facts) -> Resolved {
    let mut out = Resolved::default();
    let link_path = |kind: &str, name: &str| format!("/dev/disk/{kind}/{name}");
    if let RootSpec::Path(path) = spec {
        // A path names one device node: the host's lists of block devices
        // and links are complete enough to say it is not there.
        out.verifiable = true;
        let text = path.display().to_string();
        if text.starts_with("/dev/disk/") {
            let links = facts.disk_links.iter().filter(|l| link_path(&l.kind, &l.name) == text);
            out.found.extend(links.map(|l| short(&l.target).to_owned()));
        } else {
            let name = short(&text);
            if facts.block_devices.iter().any(|b| b.name == name) || facts.disk_links.iter().any(|l| l.target == text) {
                out.found.insert(name.to_owned());
            }
            // `/dev/mapper/vg-root`: the block device with the mount's number.
            for mount in facts.mounts.iter().filter(|m| m.source == text) {
                let device = facts.block_devices.iter().find(|b| b.dev.as_deref() == Some(mount.dev.as_str()));
                out.found.insert(device.map_or(name, |b| b.name.as_str()).to_owned());
            }
        }
    } else {
        out.verifiable = !facts.disk_links.is_empty() || facts.block_ids.as_ref().is_some_and(|b| !b.is_empty());
        // `/dev/disk/by-label/x` and `LABEL=x` parse to the same spec.
        for link in facts.disk_links.iter() {
            if RootSpec::parse(&link_path(&link.kind, &link.name)) == *spec {
                out.found.insert(short(&link.target).to_owned());
            }
        }
        if let Some((tag, value)) = blkid_tag(spec) {
            for id in facts.block_ids.iter().flatten() {
                if id.tags.get(tag).map(String::as_str) == Some(value) {
                    out.from_blkid.insert(short(&id.devname).to_owned());
                }
            }
        }
    }
    out.from_blkid.retain(|d| seen_at_boot(d));
    out.found.retain(|d| seen_at_boot(d));
    out.found.extend(out.from_blkid.iter().cloned());
    out
}

/// The root device check.
#[must_use]
pub fn check_root(new: &SystemToplevel, facts: &Facts) -> Vec<Finding> {
    let rootfs = match new.root_filesystem() {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding::new(
                "root.unreadable",
                Severity::Error,
                format!("the new system's root file system cannot be read: {e}"),
            )];
        }
    };
    let Some(spec) = rootfs.device() else {
        return vec![Finding::new(
            "root.none",
            Severity::Error,
            "the new system mounts nothing at / (no `/` line in etc/fstab and no root= parameter)",
        )];
    };
    if let RootSpec::Other(what) = &spec {
        return vec![Finding::new(
            "root.not-a-block-device",
            Severity::Info,
            format!("the new root is {what}, not a block device: its presence is not checked"),
        )];
    }
    let resolved = resolve(&spec, facts);
    let current_root = facts.root_block_name();
    let mut out = Vec::new();
    if resolved.from_blkid.len() > 1 {
        out.push(
            Finding::new(
                "root.not-unique",
                Severity::Error,
                format!(
                    "{spec} names {} devices on this host: stage 1 may mount the wrong one",
                    resolved.from_blkid.len()
                ),
            )
            .with_evidence(resolved.from_blkid.iter().map(|d| format!("/dev/{d}")))
            .with_fix("give the root file system a unique label (`e2label`/`tune2fs -L`) or name it by UUID in `fileSystems.\"/\".device`"),
        );
    }
    // When the spec matches several devices and the current root is one of
    // them, that is the one checked (the driver check covered its chain).
    let chosen = resolved.found.iter().find(|d| Some(d.as_str()) == current_root).or_else(|| resolved.found.first());
    match chosen {
        None if resolved.verifiable => out.push(device_missing(&spec, &rootfs, facts)),
        None => out.push(Finding::new(
            "root.device-unverified",
            Severity::Warning,
            format!("{spec} cannot be verified: the host has no /dev/disk links and no blkid"),
        )),
        Some(dev) if current_root.is_some_and(|cur| cur != dev) => out.push(
            Finding::new(
                "root.other-device",
                Severity::Warning,
                format!(
                    "{spec} is /dev/{dev}, but / is on /dev/{} now: the driver check covered the current root device's chain",
                    current_root.unwrap_or("?")
                ),
            )
            .with_fix("make sure the new root device is reachable with the same drivers"),
        ),
        Some(dev) => out.push(Finding::new("root.device", Severity::Info, format!("{spec} is /dev/{dev} on this host"))),
    }
    let on_current_root = chosen.is_some_and(|d| Some(d.as_str()) == current_root);
    if let (true, Some(new_fs), Some(cur_fs)) =
        (on_current_root, rootfs.fs_type(), facts.root.as_ref().and_then(|r| r.fs_type.as_deref()))
    {
        if new_fs != cur_fs && new_fs != "auto" {
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

/// `root.device-missing`, with the names the current root has as evidence.
fn device_missing(spec: &RootSpec, rootfs: &RootFilesystem, facts: &Facts) -> Finding {
    let wait_unit = spec.device_path().map_or_else(|| spec.to_string(), |p| p.display().to_string());
    let mut evidence =
        vec![format!("new root: {spec} (from {})", if rootfs.fstab.is_some() { "etc/fstab" } else { "root=" })];
    if let Some(cur) = facts.root_block_name() {
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
    Finding::new(
        "root.device-missing",
        Severity::Error,
        format!("{spec} does not exist on this host: stage 1 would wait forever (\"A start job is running for {wait_unit}\")"),
    )
    .with_evidence(evidence)
    .with_fix("set `fileSystems.\"/\".device` to a name the host has (see `fleetgate facts`), e.g. \"/dev/disk/by-uuid/…\"")
}
