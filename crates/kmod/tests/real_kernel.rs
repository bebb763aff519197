//! Compares this crate with the real `modprobe` on a real Debian kernel tree.
//!
//! Needs `/lib/modules/<kver>` (Debian: `apt-get install -y linux-image-amd64
//! kmod`) and `modprobe`; CI installs both. Set `FLEETGATE_KMOD_KVER` to pick
//! a version when several are installed. Without them every test here fails
//! loudly instead of passing without having checked anything.
//!
//! modprobe runs with `-C /dev/null` (no `/etc/modprobe.d`), the way NixOS
//! builds its initrd closure, because configuration is outside this crate.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fleetgate_kmod::{LoadStep, LookupSource, ModuleIndex, ModuleName, Provider};

struct Kernel {
    version: String,
    dir: PathBuf,
    modprobe: PathBuf,
    index: ModuleIndex,
}

fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let version = match std::env::var("FLEETGATE_KMOD_KVER") {
            Ok(v) => v,
            Err(_) => {
                let mut versions: Vec<String> = fs::read_dir("/lib/modules")
                    .map(|rd| {
                        rd.filter_map(Result::ok)
                            .filter(|e| e.path().join("modules.dep").is_file())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                versions.sort();
                versions.pop().unwrap_or_else(|| {
                    panic!(
                        "no kernel modules tree with modules.dep under /lib/modules; \
                         install one: apt-get install -y linux-image-amd64 kmod"
                    )
                })
            }
        };
        let dir = Path::new("/lib/modules").join(&version);
        let modprobe = ["/usr/sbin/modprobe", "/sbin/modprobe", "/usr/bin/modprobe"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("modprobe not found; install it: apt-get install -y kmod"));
        let index = ModuleIndex::load(&dir).expect("load the real modules tree");
        Kernel { version, dir, modprobe, index }
    })
}

fn modprobe(args: &[&str]) -> (bool, Vec<String>) {
    let k = kernel();
    let out = Command::new(&k.modprobe)
        .args(["-C", "/dev/null", "-S", &k.version])
        .args(args)
        .output()
        .expect("run modprobe");
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_end().to_owned()).collect();
    (out.status.success(), lines)
}

/// `modprobe --resolve-alias`, each module once (modprobe prints a module
/// once per matching pattern).
fn modprobe_resolve(alias: &str) -> Vec<String> {
    let (_, lines) = modprobe(&["--resolve-alias", "--", alias]);
    let mut seen = HashSet::new();
    lines.into_iter().filter(|l| seen.insert(l.clone())).collect()
}

fn ours_resolve(alias: &str) -> Vec<String> {
    kernel().index.resolve_modalias(alias).iter().map(ToString::to_string).collect()
}

fn modprobe_show_depends(query: &str) -> Vec<String> {
    modprobe(&["--show-depends", "--", query]).1
}

fn ours_show_depends(query: &str) -> Vec<String> {
    let k = kernel();
    k.index
        .load_plan(query)
        .iter()
        .filter_map(|step| match step {
            LoadStep::Insmod { path, .. } => Some(format!("insmod {}/{path}", k.dir.display())),
            LoadStep::Builtin { module } => Some(format!("builtin {module}")),
            LoadStep::Unavailable { .. } => None, // modprobe prints nothing
        })
        .collect()
}

/// Compares resolution of every query; returns how many resolved to
/// something, so callers can make sure the comparison was not vacuous.
fn assert_resolution_matches(queries: &[String]) -> usize {
    let mut mismatches = Vec::new();
    let mut resolved = 0;
    for q in queries {
        let (want, got) = (modprobe_resolve(q), ours_resolve(q));
        resolved += usize::from(!want.is_empty());
        if want != got {
            mismatches.push(format!("{q}: modprobe {want:?}, ours {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} queries differ:\n{}",
        mismatches.len(),
        queries.len(),
        mismatches.join("\n")
    );
    resolved
}

const ROOT_DISK_ALIASES: [(&str, &str); 5] = [
    // This machine's disk and its PCI function (/sys/block/vda/device/modalias
    // and /sys/devices/pci0000:00/0000:00:02.0/modalias).
    ("virtio:d00000002v00001AF4", "virtio_blk"),
    ("pci:v00001AF4d00001042sv00001AF4sd00001042bc01sc80i00", "virtio_pci"),
    ("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02", "nvme"),
    ("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", "ahci"),
    ("virtio:d00000008v00001AF4", "virtio_scsi"),
];

#[test]
fn tree_loads_completely() {
    let k = kernel();
    assert_eq!(k.index.kernel_version(), Some(k.version.as_str()));
    assert!(k.index.absent_files().is_empty(), "{:?}", k.index.absent_files());
    assert!(k.index.skipped_lines().is_empty(), "{:?}", k.index.skipped_lines());
    assert!(k.index.module_count() > 1000, "{}", k.index.module_count());
    assert!(k.index.alias_count() > 10_000, "{}", k.index.alias_count());
}

#[test]
fn root_disk_modaliases_resolve_like_modprobe() {
    let queries: Vec<String> = ROOT_DISK_ALIASES.iter().map(|(a, _)| (*a).to_owned()).collect();
    assert_resolution_matches(&queries);
    // And to the drivers every Linux user expects, so a shared mistake of
    // ours and modprobe's test setup cannot pass unnoticed.
    for (alias, module) in ROOT_DISK_ALIASES {
        assert_eq!(ours_resolve(alias), [module], "{alias}");
    }
}

#[test]
fn names_symbols_builtins_and_misses_resolve_like_modprobe() {
    let queries: Vec<String> = [
        "virtio_blk",
        "virtio-scsi",
        "ext4",
        "fs-ext4",
        "crypto-crc32c",
        "crc32c",
        "md5",
        "crypto-md5",
        "fs-debugfs",
        "zswap",
        "symbol:virtio_check_driver_offered_feature",
        "virtio:d00000001v00001AF4",
        "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
        "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30",
        "pci:v00001AF4d00001000sv*",
        "nonexistent-module",
        "virtio_blk.ko",
        "",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let resolved = assert_resolution_matches(&queries);
    assert!(resolved >= 12, "only {resolved} queries resolved");
}

/// Every modalias this machine's hardware exposes under /sys.
fn live_modaliases() -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![PathBuf::from("/sys/devices")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && entry.file_name() == "modalias" {
                if let Ok(text) = fs::read_to_string(entry.path()) {
                    let text = text.trim();
                    if !text.is_empty() {
                        found.insert(text.to_owned());
                    }
                }
            }
        }
    }
    found.into_iter().take(400).collect()
}

#[test]
fn every_live_sysfs_modalias_resolves_like_modprobe() {
    let aliases = live_modaliases();
    assert!(!aliases.is_empty(), "no modalias files under /sys/devices");
    let resolved = assert_resolution_matches(&aliases);
    assert!(resolved > 0, "none of {} live modaliases resolved", aliases.len());
}

/// Turns an alias pattern into a concrete string that should match it, and
/// a near miss; modprobe decides either way.
fn instantiate(pattern: &str, miss: bool) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(if miss { "" } else { "0" }),
            '?' => out.push('Z'),
            '[' => {
                let mut set = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    set.push(d);
                }
                let negated = set.starts_with(['!', '^']);
                let first = set.trim_start_matches(['!', '^']).chars().next().unwrap_or('x');
                out.push(match (negated, miss) {
                    (false, false) | (true, true) => first,
                    _ => '~',
                });
            }
            other => out.push(other),
        }
    }
    if miss {
        out.push('Q');
    }
    out
}

#[test]
fn sampled_alias_patterns_resolve_like_modprobe() {
    let text = fs::read_to_string(kernel().dir.join("modules.alias")).expect("modules.alias");
    let patterns: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("alias ")).filter_map(|l| l.split_whitespace().next()).collect();
    let step = (patterns.len() / 150).max(1);
    let mut queries = Vec::new();
    for (i, p) in patterns.iter().enumerate().step_by(step) {
        queries.push(instantiate(p, false));
        if i % 2 == 0 {
            queries.push(instantiate(p, true));
        }
    }
    let resolved = assert_resolution_matches(&queries);
    assert!(resolved * 2 > queries.len() / 2, "only {resolved} of {} resolved", queries.len());
}

#[test]
fn dependencies_match_modprobe_show_depends() {
    // Modules whose whole chain has no softdeps: modprobe's insmod lines are
    // exactly the modules.dep closure followed by the module.
    let k = kernel();
    for (module, expected_deps) in [
        ("virtio_blk", &["virtio_ring", "virtio"][..]),
        ("virtio_scsi", &["virtio_ring", "virtio", "scsi_common", "scsi_mod"][..]),
        ("virtio_pci", &["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev"][..]),
        ("ahci", &["scsi_common", "scsi_mod", "libata", "libahci"][..]),
    ] {
        let name = ModuleName::new(module);
        let deps = k.index.dependencies(&name).expect("known module");
        let mut ours: Vec<String> = deps
            .iter()
            .chain(std::iter::once(&name))
            .map(|m| format!("insmod {}/{}", k.dir.display(), k.index.module_path(m).unwrap_or("?")))
            .collect();
        ours.dedup();
        assert_eq!(modprobe_show_depends(module), ours, "{module}");
        let names: Vec<&str> = deps.iter().map(ModuleName::as_str).collect();
        assert_eq!(names, expected_deps, "{module}");
    }
}

#[test]
fn load_plans_match_modprobe_show_depends() {
    let k = kernel();
    let mut queries: Vec<String> = [
        "virtio_blk",
        "virtio_scsi",
        "virtio_pci",
        "nvme",
        "ahci",
        "ext4",
        "xfs",
        "btrfs",
        "cifs",
        "zswap",
        "fs-ext4",
        "crypto-crc32c",
        "md5",
        "dm_crypt",
        "raid456",
        "usb_storage",
        "uas",
        "virtio:d00000002v00001AF4",
        "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
        "nonexistent-module",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    // Plus a deterministic sample of the whole tree.
    queries.extend(k.index.modules().step_by(40).map(ToString::to_string));

    let mut mismatches = Vec::new();
    for q in &queries {
        let (want, got) = (modprobe_show_depends(q), ours_show_depends(q));
        if want != got {
            mismatches.push(format!("{q}:\n  modprobe {want:#?}\n  ours {got:#?}"));
        }
    }
    assert!(mismatches.is_empty(), "{} of {} differ:\n{}", mismatches.len(), queries.len(), mismatches.join("\n"));
}

#[test]
fn incident_root_disk_requirement() {
    // The bricked VPSes: virtio disk behind virtio-pci, initrd without the
    // virtio modules.
    let k = kernel();
    let disk = k.index.requirement("virtio:d00000002v00001AF4");
    assert_eq!(disk.source, Some(LookupSource::Aliases));
    assert_eq!(disk.candidates.len(), 1);
    let blk = &disk.candidates[0];
    assert_eq!(blk.module, "virtio_blk");
    assert!(matches!(&blk.provider, Provider::File { path } if path.starts_with("kernel/drivers/block/virtio_blk.ko")));

    let broken_initrd = ["ext4", "jbd2", "mbcache", "crc16"];
    assert!(!disk.satisfied_by(|m| broken_initrd.contains(&m.as_str())));
    assert_eq!(
        blk.missing_hard(|m| broken_initrd.contains(&m.as_str())),
        [ModuleName::new("virtio_ring"), ModuleName::new("virtio"), ModuleName::new("virtio_blk")]
    );
    let good_initrd = ["virtio_ring", "virtio", "virtio_blk"];
    assert!(disk.satisfied_by(|m| good_initrd.contains(&m.as_str())));

    let bus = k.index.requirement_for_driver("virtio-pci");
    assert_eq!(bus.candidates.len(), 1);
    assert_eq!(
        bus.candidates[0].missing_hard(|m| good_initrd.contains(&m.as_str())),
        [
            ModuleName::new("virtio_pci_modern_dev"),
            ModuleName::new("virtio_pci_legacy_dev"),
            ModuleName::new("virtio_pci")
        ]
    );
}
