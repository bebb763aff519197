//! The facts script's output → [`Facts`].

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    BlockDevice, BlockId, BootEntry, Device, DiskLink, FORMAT, Facts, Finding, Firmware, Generation, Loader, Mount,
    Profile, RootDevice, Severity, SystemInfo,
};

/// A count of KiB as bytes; `None` when it is not a number or the bytes
/// do not fit (a hostile or broken host must not crash the parser).
fn kib_to_bytes(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok()?.checked_mul(1024)
}

/// Which boot loader location the records being read belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before any loader record.
    None,
    /// The systemd-boot location that was chosen.
    SystemdBoot,
    /// The GRUB configuration that was chosen.
    Grub,
    /// A later location: its records are ignored.
    Ignored,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Parses the output of [`crate::SCRIPT`]. Never fails: unknown or malformed
/// records are skipped (and reported), missing ones leave fields unknown and
/// add findings.
#[must_use]
pub fn parse(target: &str, output: &str) -> Facts {
    let mut f = Facts { format: FORMAT, target: target.to_owned(), ..Facts::default() };
    let mut version = None;
    let mut ended = false;
    let mut missing_files = Vec::new();
    let mut skipped = Vec::new();
    let mut blkid_lines: Option<Vec<String>> = None;
    let mut systems: BTreeMap<String, SystemInfo> = BTreeMap::new();
    let mut files: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut eols: BTreeSet<(String, String)> = BTreeSet::new();
    let mut section = Section::None;

    for line in output.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        match (field(0), fields.len()) {
            ("version", _) => version = Some(field(1).to_owned()),
            ("end", _) => ended = true,
            ("missing-tool", _) => f.missing_tools.push(field(1).to_owned()),
            ("missing-file", _) => missing_files.push(field(1).to_owned()),
            ("hostname", _) => f.hostname = opt(field(1)),
            ("kernel", _) => f.kernel_release = opt(field(1)),
            ("boot-id", _) => f.boot_id = opt(field(1)),
            ("mount", 5) => f.mounts.push(Mount {
                mount_point: field(1).to_owned(),
                dev: field(2).to_owned(),
                fs_type: field(3).to_owned(),
                source: field(4).to_owned(),
            }),
            ("root", 5) => {
                f.root = Some(RootDevice {
                    dev: opt(field(1)),
                    fs_type: opt(field(2)),
                    source: opt(field(3)),
                    sysfs: opt(field(4)),
                });
            }
            ("device", 7) => f.root_chain.push(Device {
                sysfs: field(1).to_owned(),
                subsystem: opt(field(2)),
                driver: opt(field(3)),
                module: opt(field(4)),
                modalias: opt(field(5)),
                devname: opt(field(6)),
            }),
            ("block", 4) => f.block_devices.push(BlockDevice {
                name: field(1).to_owned(),
                dev: opt(field(2)),
                sysfs: opt(field(3)),
            }),
            ("link", 4) => f.disk_links.push(DiskLink {
                kind: field(1).to_owned(),
                name: field(2).to_owned(),
                target: field(3).to_owned(),
            }),
            ("blkid", 2) => blkid_lines.get_or_insert_with(Vec::new).push(field(1).to_owned()),
            ("system", 3) => {
                systems.entry(field(1).to_owned()).or_default().path = field(2).to_owned();
            }
            ("system-link", 4) => {
                systems.entry(field(1).to_owned()).or_default().links.insert(field(2).to_owned(), field(3).to_owned());
            }
            ("system-file", 3) => {
                files.entry((field(1).to_owned(), field(2).to_owned())).or_default();
            }
            ("system-eol", 3) => {
                eols.insert((field(1).to_owned(), field(2).to_owned()));
            }
            ("system-line", 4) => {
                files.entry((field(1).to_owned(), field(2).to_owned())).or_default().push(field(3).to_owned());
            }
            ("generation", 3) => match field(1).parse() {
                Ok(number) => f.generations.push(Generation { number, path: field(2).to_owned() }),
                Err(_) => skipped.push(line.to_owned()),
            },
            ("profile", 3) => {
                f.profile = Some(Profile { link: field(1).to_owned(), path: field(2).to_owned() });
            }
            ("firmware", _) => {
                f.boot.firmware = match field(1) {
                    "uefi" => Some(Firmware::Uefi),
                    "bios" => Some(Firmware::Bios),
                    _ => None,
                };
            }
            // The first loader location wins (systemd-boot over GRUB): the
            // records of a later one are ignored, never merged in.
            ("sdboot", 2) => {
                section = if f.boot.loader == Some(Loader::SystemdBoot) {
                    Section::Ignored
                } else {
                    f.boot.loader = Some(Loader::SystemdBoot);
                    f.boot.location = opt(field(1));
                    f.boot.entries.clear();
                    f.boot.loader_conf.clear();
                    f.boot.grubenv.clear();
                    Section::SystemdBoot
                };
            }
            ("sdboot-entry", 3) => {
                if section == Section::SystemdBoot {
                    f.boot.entries.push(BootEntry { id: field(1).to_owned(), title: opt(field(2)) });
                }
            }
            ("sdboot-conf", 2) => {
                if section == Section::SystemdBoot && !field(1).trim().is_empty() {
                    f.boot.loader_conf.push(field(1).to_owned());
                }
            }
            ("efivar", 3) => {
                f.boot.efi_vars.insert(field(1).to_owned(), field(2).to_owned());
            }
            ("grub", 2) => {
                section = if f.boot.loader.is_none() {
                    f.boot.loader = Some(Loader::Grub);
                    f.boot.location = opt(field(1));
                    Section::Grub
                } else {
                    Section::Ignored
                };
            }
            // `grub-entry <path> <title>`: the path is what `grub-reboot`
            // takes (`NixOS - All configurations>NixOS - Configuration 2 (…)`).
            ("grub-entry", 2 | 3) => {
                if section == Section::Grub {
                    let title = if fields.len() == 3 { field(2) } else { field(1) };
                    f.boot.entries.push(BootEntry { id: field(1).to_owned(), title: opt(title) });
                }
            }
            ("grubenv", 2) => {
                if section == Section::Grub {
                    if let Some((k, v)) = field(1).split_once('=') {
                        f.boot.grubenv.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            ("nix-free-kib", 3) => {
                f.nix_free_bytes = kib_to_bytes(field(2));
                if f.nix_free_bytes.is_none() {
                    skipped.push(line.to_owned());
                }
            }
            ("mem", 3) => {
                let bytes = kib_to_bytes(field(2));
                if bytes.is_none() {
                    skipped.push(line.to_owned());
                }
                match field(1) {
                    "MemTotal" => f.memory_total_bytes = bytes,
                    "MemAvailable" => f.memory_available_bytes = bytes,
                    _ => {}
                }
            }
            _ => skipped.push(line.to_owned()),
        }
    }

    for ((system, file), lines) in files {
        let mut text = lines.join("\n");
        if eols.contains(&(system.clone(), file.clone())) {
            text.push('\n');
        }
        systems.entry(system).or_default().files.insert(file, text);
    }
    f.current_system = systems.remove("current").filter(|s| !s.path.is_empty());
    f.booted_system = systems.remove("booted").filter(|s| !s.path.is_empty());
    f.generations.sort_by_key(|g| g.number);
    f.block_ids = blkid_lines.map(|lines| parse_blkid(&lines));

    findings(&mut f, version.as_deref(), ended, &missing_files, &skipped);
    f
}

/// `blkid -o export`: blocks of `KEY=value` lines separated by empty lines.
fn parse_blkid(lines: &[String]) -> Vec<BlockId> {
    let mut out = Vec::new();
    let mut cur = BlockId::default();
    let flush = |cur: &mut BlockId, out: &mut Vec<BlockId>| {
        if !cur.devname.is_empty() {
            out.push(std::mem::take(cur));
        }
        *cur = BlockId::default();
    };
    for line in lines {
        match line.split_once('=') {
            Some(("DEVNAME", v)) => {
                flush(&mut cur, &mut out);
                cur.devname = v.to_owned();
            }
            Some((k, v)) => {
                cur.tags.insert(k.to_owned(), v.to_owned());
            }
            None => flush(&mut cur, &mut out),
        }
    }
    flush(&mut cur, &mut out);
    out
}

fn findings(f: &mut Facts, version: Option<&str>, ended: bool, missing_files: &[String], skipped: &[String]) {
    let mut add = |finding: Finding| f.findings.push(finding);
    match version {
        Some("1") => {}
        Some(v) => add(Finding::new(
            "facts.format",
            Severity::Warning,
            format!("the facts script reported format {v}; this fleetgate reads format 1"),
        )),
        None => add(Finding::new(
            "facts.no-output",
            Severity::Error,
            "the facts script printed nothing recognisable: is `sh` a POSIX shell on this host?",
        )
        .with_fix("make `sh` on the host a POSIX shell (dash, bash, busybox sh) and make sure the login prints nothing to stdout")),
    }
    if version.is_some() && !ended {
        add(Finding::new(
            "facts.truncated",
            Severity::Warning,
            "the facts script's output stops before its end; later facts are unknown",
        )
        .with_fix(
            "gather the facts again; if they stop again, look at the host's logs (out of memory, a killed session)",
        ));
    }
    if !f.missing_tools.is_empty() {
        add(Finding::new(
            "facts.missing-tools",
            Severity::Info,
            format!("tools not found on the host: {}; the facts they give are unknown", f.missing_tools.join(", ")),
        )
        .with_fix(format!("put {} on the host's PATH for complete facts", f.missing_tools.join(", "))));
    }
    for file in missing_files {
        let (severity, why) = match file.as_str() {
            "/dev/disk" => {
                (Severity::Info, "no udev /dev/disk links: root names (LABEL=, UUID=) are checked against blkid only")
            }
            "/proc/self/mountinfo" => (Severity::Warning, "the root file system cannot be found"),
            _ => (Severity::Info, "the fact it gives is unknown"),
        };
        add(Finding::new("facts.missing-file", severity, format!("{file} is missing: {why}")));
    }
    let root_sysfs = f.root.as_ref().and_then(|r| r.sysfs.as_deref());
    if version.is_some() && (root_sysfs.is_none() || f.root_chain.is_empty()) {
        let root = f.root.clone().unwrap_or_default();
        add(Finding::new(
            "facts.root-device-unknown",
            Severity::Warning,
            "the block device holding / was not found in sysfs; the drivers it needs are unknown",
        )
        .with_evidence([
            format!("mount source: {}", root.source.as_deref().unwrap_or("unknown")),
            format!("device number: {}", root.dev.as_deref().unwrap_or("unknown")),
            format!("file system: {}", root.fs_type.as_deref().unwrap_or("unknown")),
        ])
        .with_fix("gather the facts as root, on the host itself, with /sys mounted"));
    }
    if version.is_some() && f.current_system.is_none() {
        add(Finding::new(
            "facts.not-nixos",
            Severity::Info,
            "/run/current-system does not exist: not a running NixOS system",
        ));
    }
    if !skipped.is_empty() {
        add(Finding::new(
            "facts.unparsed",
            Severity::Info,
            format!("{} line(s) of the facts script's output were not understood", skipped.len()),
        )
        .with_evidence(skipped.iter().take(10).cloned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(records: &[&str]) -> Facts {
        let mut out = String::from("version\t1\n");
        for r in records {
            out.push_str(r);
            out.push('\n');
        }
        out.push_str("end\n");
        parse("test", &out)
    }

    fn unparsed(f: &Facts) -> Vec<String> {
        f.findings.iter().filter(|f| f.id == "facts.unparsed").flat_map(|f| f.evidence.clone()).collect()
    }

    #[test]
    fn the_human_form_shows_each_findings_fix() {
        let f = facts(&["missing-tool\tblkid"]);
        let text = crate::render(&f);
        assert!(text.contains("info    facts.missing-tools: tools not found on the host: blkid"), "{text}");
        assert!(text.contains("        fix: put blkid on the host's PATH for complete facts"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&f.to_json()).expect("valid JSON");
        assert_eq!(json["missing_tools"][0], "blkid");
    }

    #[test]
    fn sizes_that_overflow_are_unknown_and_reported_not_a_panic() {
        let f = facts(&[
            "nix-free-kib\t/nix\t18446744073709551615",
            "mem\tMemTotal\t99999999999999999999",
            "mem\tMemAvailable\t1024",
        ]);
        assert_eq!(f.nix_free_bytes, None);
        assert_eq!(f.memory_total_bytes, None);
        assert_eq!(f.memory_available_bytes, Some(1 << 20));
        assert_eq!(unparsed(&f), ["nix-free-kib\t/nix\t18446744073709551615", "mem\tMemTotal\t99999999999999999999"]);
        assert_eq!(facts(&["nix-free-kib\t/nix\t12"]).nix_free_bytes, Some(12 * 1024));
    }

    #[test]
    fn only_the_first_loader_location_counts() {
        let f = facts(&[
            "sdboot\t/boot",
            "sdboot-entry\tnixos-generation-1.conf\tNixOS",
            "sdboot-conf\tdefault nixos-generation-1.conf",
            "sdboot\t/efi",
            "sdboot-entry\tstale.conf\tStale",
            "sdboot-conf\tdefault stale.conf",
            "efivar\tLoaderEntryDefault\tnixos-generation-1.conf",
            "grub\t/boot/grub/grub.cfg",
            "grub-entry\tNixOS\tNixOS",
            "grubenv\tnext_entry=x",
        ]);
        assert_eq!(f.boot.loader, Some(Loader::SystemdBoot));
        assert_eq!(f.boot.location.as_deref(), Some("/boot"));
        assert_eq!(f.boot.entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["nixos-generation-1.conf"]);
        assert_eq!(f.boot.loader_conf, ["default nixos-generation-1.conf"]);
        assert!(f.boot.grubenv.is_empty());
        assert_eq!(f.boot.efi_vars.len(), 1);

        let f = facts(&[
            "grub\t/boot/grub/grub.cfg",
            "grub-entry\tNixOS\tNixOS",
            "grub-entry\tNixOS - All configurations>NixOS - Configuration 1 (2025-01-01)\tNixOS - Configuration 1 (2025-01-01)",
            "grubenv\tsaved_entry=0",
            "grub\t/boot/grub2/grub.cfg",
            "grub-entry\tOther\tOther",
            "grubenv\tnext_entry=Other",
        ]);
        assert_eq!(f.boot.loader, Some(Loader::Grub));
        assert_eq!(f.boot.location.as_deref(), Some("/boot/grub/grub.cfg"));
        assert_eq!(
            f.boot.entries,
            [
                BootEntry { id: "NixOS".into(), title: Some("NixOS".into()) },
                BootEntry {
                    id: "NixOS - All configurations>NixOS - Configuration 1 (2025-01-01)".into(),
                    title: Some("NixOS - Configuration 1 (2025-01-01)".into()),
                },
            ]
        );
        assert_eq!(f.boot.grubenv.keys().collect::<Vec<_>>(), ["saved_entry"]);
        assert!(unparsed(&f).is_empty());
    }
}
