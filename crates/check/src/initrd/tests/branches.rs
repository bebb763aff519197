//! One test per branch of the coverage assessment, in both directions, on a
//! small virtio/SATA/ext4 kernel: what decides a verdict is pinned here
//! (`cargo mutants --file crates/check/src/initrd.rs`, see docs/check.md).

use fleetgate_kmod::IndexSources;

use super::super::*;
use super::device as dev;

const KVER: &str = "6.6.1";
const PCI: &str = "/sys/devices/pci0000:00/0000:00:02.0";

fn kernel() -> ModuleIndex {
    ModuleIndex::from_parts(IndexSources {
        kernel_version: Some(KVER),
        modules_dep: "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                      kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
                      kernel/drivers/virtio/virtio_ring.ko:\n\
                      kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                      kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko\n\
                      kernel/drivers/ata/libahci.ko:\n\
                      kernel/drivers/ata/ata_generic.ko:\n\
                      kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n\
                      kernel/fs/jbd2/jbd2.ko:\n\
                      kernel/arch/x86/crypto/crc32c-intel.ko:\n\
                      kernel/drivers/foo/foo_mod.ko:\n\
                      kernel/drivers/foo/bar.ko:\n",
        modules_alias: "alias virtio:d00000002v* virtio_blk\n\
                        alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
                        alias pci:v*d*sv*sd*bc01sc06i01* ata_generic\n\
                        alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
                        alias fs-ext3 ext4\n\
                        alias crypto-crc32c crc32c_intel\n\
                        alias dev:ghost ghost_mod\n\
                        alias dev:half ghost_mod\n\
                        alias dev:half foo_mod\n\
                        alias dev:baz bar\n\
                        alias dev:bi builtin_drv\n\
                        alias dev:bi foo_mod\n",
        modules_softdep: "softdep ext4 pre: crypto-crc32c\n",
        modules_builtin: "kernel/drivers/base/builtin_drv.ko\n",
        ..IndexSources::default()
    })
}

fn disk() -> Device {
    Device { devname: Some("vda2".into()), ..dev("/sys/devices/virtual/block/vda/vda2", "block", None, None, None) }
}

/// The virtio-blk device of the root disk, bound to its module.
fn virtio_blk() -> Device {
    dev(&format!("{PCI}/virtio1"), "virtio", Some("virtio_blk"), Some("virtio_blk"), Some("virtio:d00000002v00001AF4"))
}

/// virtio-blk behind virtio-pci, both bound to modules, as on a VPS.
fn virtio_chain() -> Vec<Device> {
    vec![
        disk(),
        virtio_blk(),
        dev(
            PCI,
            "pci",
            Some("virtio-pci"),
            Some("virtio_pci"),
            Some("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
        ),
    ]
}

const ALL_VIRTIO: [&str; 6] = ["virtio_blk", "virtio", "virtio_ring", "virtio_pci", "ext4", "jbd2"];

fn run(chain: Vec<Device>, fs: Option<&str>, initrd: &[&str]) -> Coverage {
    run_on(&kernel(), chain, fs, initrd)
}

fn run_on(index: &ModuleIndex, chain: Vec<Device>, fs: Option<&str>, initrd: &[&str]) -> Coverage {
    let facts = Facts { root_chain: chain, ..Facts::default() };
    let in_initrd: BTreeSet<String> = initrd.iter().map(|m| (*m).to_owned()).collect();
    let mut cov = Coverage::default();
    let inputs = Inputs {
        index,
        kver: KVER,
        in_initrd: &in_initrd,
        initrd: "/initrd",
        metadata: std::path::Path::new("/lib/modules/6.6.1"),
        fs_type: fs,
    };
    assess(&mut cov, &inputs, &facts);
    cov
}

fn ids(cov: &Coverage) -> Vec<&str> {
    cov.findings.iter().map(|f| f.id.as_str()).collect()
}

fn finding<'a>(cov: &'a Coverage, id: &str) -> &'a Finding {
    cov.findings.iter().find(|f| f.id == id).unwrap_or_else(|| panic!("no {id}: {:#?}", cov.findings))
}

fn chosen(cov: &Coverage) -> Vec<(&str, bool)> {
    cov.needs.iter().map(|n| (n.module.as_deref().unwrap_or("?"), n.builtin)).collect()
}

#[test]
fn a_complete_initrd_is_covered_and_one_module_less_is_not() {
    let cov = run(virtio_chain(), Some("ext4"), &[&ALL_VIRTIO[..], &["crc32c_intel"]].concat());
    assert_eq!(ids(&cov), ["initrd.coverage"]);
    assert_eq!(cov.findings[0].severity, Severity::Info);
    assert_eq!(cov.root_modules(), ["virtio_blk", "virtio_pci"]);
    for gone in ALL_VIRTIO {
        let initrd: Vec<&str> = ALL_VIRTIO.iter().copied().filter(|m| *m != gone).chain(["crc32c_intel"]).collect();
        let cov = run(virtio_chain(), Some("ext4"), &initrd);
        assert_eq!(ids(&cov), ["initrd.missing-modules"], "without {gone}");
        assert!(finding(&cov, "initrd.missing-modules").message.contains(gone), "without {gone}");
    }
}

#[test]
fn root_modules_are_the_device_drivers_once_without_built_ins_or_the_file_system() {
    let need = |module: &str, builtin: bool, device: bool| Need {
        what: module.to_owned(),
        module: Some(module.to_owned()),
        builtin,
        missing: Vec::new(),
        missing_soft: Vec::new(),
        device,
    };
    let cov = Coverage {
        needs: vec![
            need("virtio_blk", false, true),
            need("virtio_pci", true, true),
            need("virtio_blk", false, true),
            need("ext4", false, false),
            need("ahci", false, true),
            Need { module: None, ..need("none", false, true) },
        ],
        findings: Vec::new(),
    };
    assert_eq!(cov.root_modules(), ["virtio_blk", "ahci"]);
}

#[test]
fn the_bound_module_wins_then_the_driver_name_then_the_modalias() {
    // The module the running kernel bound, although the driver name and the
    // modalias would name others.
    let d = dev(PCI, "pci", Some("bar"), Some("foo_mod"), Some("dev:baz"));
    assert_eq!(chosen(&run(vec![disk(), d], None, &["foo_mod"])), [("foo_mod", false)]);
    // A module the new kernel lacks: the driver name.
    let d = dev(PCI, "pci", Some("bar"), Some("gone"), Some("dev:half"));
    assert_eq!(chosen(&run(vec![disk(), d], None, &["bar"])), [("bar", false)]);
    // A built-in driver named nowhere: the modalias.
    let d = dev(PCI, "pci", Some("built-in-name"), None, Some("dev:baz"));
    assert_eq!(chosen(&run(vec![disk(), d], None, &["bar"])), [("bar", false)]);
    // No modalias either: nothing, and on the root disk's controller that
    // blocks.
    let d = dev(PCI, "pci", Some("built-in-name"), None, None);
    let cov = run(vec![disk(), d], None, &[]);
    assert_eq!(ids(&cov), ["initrd.no-driver"]);
    assert!(finding(&cov, "initrd.no-driver").message.contains("0000:00:02.0, driver built-in-name"));
    // Devices without a bound driver need nothing.
    let cov = run(vec![disk(), dev(PCI, "pci", None, None, Some("dev:baz"))], None, &[]);
    assert!(cov.needs.is_empty() && cov.findings.is_empty(), "{:#?}", cov.findings);
}

#[test]
fn of_several_candidates_the_complete_or_built_in_one_is_chosen() {
    // ahci and ata_generic both match an AHCI controller: the one in the
    // initrd with all its dependencies counts.
    let sata = dev(PCI, "pci", Some("mystery"), None, Some("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"));
    let cov = run(vec![disk(), sata.clone()], None, &["ata_generic"]);
    assert_eq!(chosen(&cov), [("ata_generic", false)]);
    assert_eq!(ids(&cov), ["initrd.coverage"]);
    let cov = run(vec![disk(), sata.clone()], None, &["ahci", "libahci"]);
    assert_eq!(chosen(&cov), [("ahci", false)]);
    // Neither complete: the one missing least is named (ahci lacks libahci too).
    let cov = run(vec![disk(), sata], None, &[]);
    assert_eq!(chosen(&cov), [("ata_generic", false)]);
    assert_eq!(
        finding(&cov, "initrd.missing-modules").fix.as_deref(),
        Some(r#"boot.initrd.availableKernelModules = [ "ata_generic" ];"#)
    );
    // A built-in candidate beats a complete module: nothing to list.
    let bi = dev(PCI, "pci", Some("mystery"), None, Some("dev:bi"));
    let cov = run(vec![disk(), bi], None, &["foo_mod"]);
    assert_eq!(chosen(&cov), [("builtin_drv", true)]);
    assert!(cov.root_modules().is_empty());
    assert!(
        finding(&cov, "initrd.coverage").evidence.iter().any(|e| e.ends_with("→ builtin_drv: built into the kernel"))
    );
}

#[test]
fn a_module_the_metadata_names_but_does_not_have_is_unusable_metadata_not_a_missing_module() {
    let ghost = dev(PCI, "pci", Some("mystery"), None, Some("dev:ghost"));
    let cov = run(vec![disk(), ghost], Some("ext4"), &["ghost_mod", "ext4", "jbd2", "crc32c_intel"]);
    assert_eq!(ids(&cov), ["initrd.module-metadata-unusable"]);
    let f = finding(&cov, "initrd.module-metadata-unusable");
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.evidence, ["0000:00:02.0 (dev:ghost), driver mystery → ghost_mod"]);
    // Another candidate the kernel does have is taken instead.
    let half = dev(PCI, "pci", Some("mystery"), None, Some("dev:half"));
    let cov = run(vec![disk(), half], None, &["foo_mod"]);
    assert_eq!(ids(&cov), ["initrd.coverage"]);
    assert_eq!(chosen(&cov), [("foo_mod", false)]);
    // The file system's module too.
    let index = ModuleIndex::from_parts(IndexSources {
        kernel_version: Some(KVER),
        modules_dep: "kernel/drivers/foo/foo_mod.ko:\n",
        modules_alias: "alias fs-ext4 ext4\nalias dev:baz foo_mod\n",
        ..IndexSources::default()
    });
    let cov = run_on(&index, vec![disk()], Some("ext4"), &["ext4"]);
    assert_eq!(ids(&cov), ["initrd.module-metadata-unusable"]);
    assert_eq!(finding(&cov, "initrd.module-metadata-unusable").evidence, ["file system ext4 → ext4"]);
}

#[test]
fn the_file_system_module_by_name_or_by_its_fs_alias() {
    // ext3 is served by ext4 (`alias fs-ext3 ext4`, as Debian's ext4 has).
    let cov = run(vec![disk()], Some("ext3"), &["ext4", "jbd2", "crc32c_intel"]);
    assert_eq!(ids(&cov), ["initrd.coverage"]);
    assert_eq!(cov.needs[0].what, "file system ext3");
    assert_eq!(chosen(&cov), [("ext4", false)]);
    assert!(!cov.needs[0].device, "NixOS adds the file system's module itself");
    assert!(cov.root_modules().is_empty());
    let cov = run(vec![disk()], Some("ext3"), &[]);
    assert!(finding(&cov, "initrd.missing-modules").message.contains("ext4"));
    // By name: this kernel has no fs-ext4 alias, only the module.
    assert_eq!(ids(&run(vec![disk()], Some("ext4"), &["ext4", "jbd2", "crc32c_intel"])), ["initrd.coverage"]);
    // A file system the kernel has nothing for.
    let cov = run(vec![disk()], Some("zfs"), &[]);
    assert_eq!(ids(&cov), ["initrd.no-driver"]);
    assert!(finding(&cov, "initrd.no-driver").message.ends_with("for: file system zfs"));
    // Nothing to load for these.
    for fs in ["tmpfs", "ramfs", "rootfs", "auto", "none"] {
        let cov = run(vec![disk()], Some(fs), &[]);
        assert!(cov.needs.is_empty() && cov.findings.is_empty(), "{fs}: {:#?}", cov.findings);
    }
}

#[test]
fn coverage_is_claimed_only_when_everything_was_resolved() {
    // No bound device and no file system: nothing was shown, nothing claimed.
    let cov = run(vec![disk()], None, &[]);
    assert!(cov.findings.is_empty(), "{:#?}", cov.findings);
    // One device resolved and complete, one without any driver: blocked,
    // and no "every module needed".
    let mut chain = virtio_chain();
    chain.push(dev("/sys/devices/pci0000:00", "pci", Some("gone"), Some("gone"), None));
    let cov = run(chain, Some("ext4"), &[&ALL_VIRTIO[..], &["crc32c_intel"]].concat());
    assert_eq!(ids(&cov), ["initrd.no-driver"]);
    // Or a contradiction.
    let mut chain = virtio_chain();
    chain.push(dev("/sys/devices/pci0000:00", "pci", Some("mystery"), None, Some("dev:ghost")));
    let cov = run(chain, Some("ext4"), &[&ALL_VIRTIO[..], &["crc32c_intel"]].concat());
    assert_eq!(ids(&cov), ["initrd.module-metadata-unusable"]);
}

#[test]
fn an_unknown_chain_blocks() {
    let cov = run(Vec::new(), Some("ext4"), &["ext4", "jbd2", "crc32c_intel"]);
    assert_eq!(ids(&cov), ["initrd.root-chain-unknown", "initrd.coverage"]);
    assert_eq!(cov.findings[0].severity, Severity::Error);
    assert!(!ids(&run(virtio_chain(), None, &ALL_VIRTIO)).contains(&"initrd.root-chain-unknown"));
}

#[test]
fn a_loaded_module_gone_from_the_new_kernel_blocks_even_above_the_controller() {
    // The port above the virtio function had a module loaded on the running
    // host, and the new kernel has no such module: that is known to be
    // missing, not merely unverified.
    let mut chain = virtio_chain();
    chain.push(dev(
        "/sys/devices/pci0000:00",
        "pci",
        Some("gone"),
        Some("gone"),
        Some("pci:v00001234d00005678sv00000000sd00000000bc08sc80i00"),
    ));
    assert_eq!(ids(&run(chain, None, &ALL_VIRTIO)), ["initrd.no-driver"]);
    // Built in (no module) above the controller: only a warning.
    let mut chain = virtio_chain();
    chain.push(dev(
        "/sys/devices/pci0000:00",
        "pci",
        Some("gone"),
        None,
        Some("pci:v00001234d00005678sv00000000sd00000000bc08sc80i00"),
    ));
    assert_eq!(ids(&run(chain, None, &ALL_VIRTIO)), ["initrd.driver-unverified", "initrd.coverage"]);
}

#[test]
fn the_controller_is_the_pci_function_with_no_bound_pci_function_below() {
    // A built-in, unknown driver on the virtio-pci function itself: the
    // virtio device below it is bound, but it is no PCI function, so the
    // function is still the root disk's own controller: blocked.
    let chain = vec![
        disk(),
        virtio_blk(),
        dev(PCI, "pci", Some("mystery"), None, Some("pci:v00001234d00005678sv00000000sd00000000bc01sc00i00")),
    ];
    assert_eq!(ids(&run(chain.clone(), None, &ALL_VIRTIO)), ["initrd.no-driver"]);
    assert!(is_own_controller(&chain, &chain[2]));
    // A bound PCI function below makes it a bus in front of the controller.
    let below = dev(&format!("{PCI}/0000:01:00.0"), "pci", Some("virtio-pci"), Some("virtio_pci"), None);
    let mut with_below = chain.clone();
    with_below.push(below.clone());
    assert!(!is_own_controller(&with_below, &chain[2]));
    // An unbound PCI function below, or a bound one elsewhere, does not.
    let unbound = Device { driver: None, ..below.clone() };
    assert!(is_own_controller(&[chain[2].clone(), unbound], &chain[2]));
    let elsewhere = Device { sysfs: "/sys/devices/pci0000:00/0000:00:03.0".into(), ..below };
    assert!(is_own_controller(&[chain[2].clone(), elsewhere], &chain[2]));
}

#[test]
fn only_pci_to_pci_bridges_are_skipped() {
    let bridge = "pci:v00008086d00007C00sv00000000sd00000000bc06sc04i00";
    assert!(is_pci_bridge(&dev(PCI, "pci", Some("pcieport"), None, Some(bridge))));
    // The same class words on another bus, other PCI classes, no modalias.
    assert!(!is_pci_bridge(&dev(PCI, "virtio", Some("pcieport"), None, Some(bridge))));
    assert!(!is_pci_bridge(&dev(
        PCI,
        "pci",
        Some("x"),
        None,
        Some("pci:v00008086d00007C00sv00000000sd00000000bc06sc00i00")
    )));
    assert!(!is_pci_bridge(&dev(
        PCI,
        "pci",
        Some("x"),
        None,
        Some("pci:v00008086d00007C00sv00000000sd00000000bc01sc04i00")
    )));
    assert!(!is_pci_bridge(&dev(PCI, "pci", Some("x"), None, None)));
    assert_eq!(pci_class("pci:v00008086d00007C00sv00000000sd00000000bc0Asc0Bi00"), Some((0x0A, 0x0B)));
    assert_eq!(pci_class("pci:bc06"), None);
    assert_eq!(pci_class("pci:bc06sc"), None);
}

#[test]
fn missing_soft_dependencies_warn() {
    let cov = run(vec![disk()], Some("ext4"), &["ext4", "jbd2"]);
    assert_eq!(ids(&cov), ["initrd.coverage", "initrd.missing-softdeps"]);
    let f = finding(&cov, "initrd.missing-softdeps");
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.fix.as_deref(), Some(r#"boot.initrd.availableKernelModules = [ "crc32c_intel" ];"#));
    assert_eq!(ids(&run(vec![disk()], Some("ext4"), &["ext4", "jbd2", "crc32c_intel"])), ["initrd.coverage"]);
}

#[test]
fn the_fix_and_the_message_name_each_module_once() {
    // Two devices driven by virtio_pci, both lacking it.
    let mut chain = virtio_chain();
    chain.push(dev("/sys/devices/pci0000:00/0000:00:03.0", "pci", Some("virtio-pci"), Some("virtio_pci"), None));
    let cov = run(chain, None, &["virtio_blk"]);
    let f = finding(&cov, "initrd.missing-modules");
    assert_eq!(f.fix.as_deref(), Some(r#"boot.initrd.availableKernelModules = [ "virtio_blk" "virtio_pci" ];"#));
    assert!(
        f.message.starts_with("the new initrd lacks virtio_pci (and their dependencies virtio_ring, virtio); virtio_blk is there but not all its dependencies needed to reach /dev/vda2"),
        "{}",
        f.message
    );
    // Two drivers present, their dependencies not.
    let cov = run(virtio_chain(), None, &["virtio_blk", "virtio_pci"]);
    let f = finding(&cov, "initrd.missing-modules");
    assert!(
        f.message.starts_with("the new initrd lacks virtio_ring, virtio (dependencies of virtio_blk, virtio_pci, which are there without them)"),
        "{}",
        f.message
    );
}

#[test]
fn damaged_or_self_contradicting_metadata_cannot_be_judged_by() {
    let with = |dep: &str, alias: &str, builtin: &str| {
        ModuleIndex::from_parts(IndexSources {
            kernel_version: Some(KVER),
            modules_dep: dep,
            modules_alias: alias,
            modules_builtin: builtin,
            ..IndexSources::default()
        })
    };
    let dep = "kernel/a.ko:\n";
    let alias = "alias dev:a a\n";
    let builtin = "kernel/b.ko\n";
    assert_eq!(metadata_damage(&with(dep, alias, builtin)), None);
    assert_eq!(metadata_damage(&kernel()), None);
    // Every module built in (a monolithic kernel): fine.
    assert_eq!(metadata_damage(&with("", "", builtin)), None);
    // An alias with an unmatched bracket is depmod's own output: fine.
    assert_eq!(metadata_damage(&with(dep, "alias dev:a a\nalias dev:[x a\n", builtin)), None);
    let damage = |index: ModuleIndex| metadata_damage(&index).map(|(reason, _)| reason);
    assert_eq!(
        damage(with("kernel/a.ko:\ngarbage\n", alias, builtin)).as_deref(),
        Some("1 of its lines are not what depmod writes")
    );
    assert_eq!(
        damage(with(dep, "alias dev:a\n", builtin)).as_deref(),
        Some("1 of its lines are not what depmod writes")
    );
    assert_eq!(damage(with("", alias, builtin)).as_deref(), Some("modules.dep lists no module"));
    assert_eq!(damage(with("", "", "")).as_deref(), Some("modules.dep lists no module"));
    assert_eq!(
        damage(with(dep, "", builtin)).as_deref(),
        Some("modules.alias has no alias, so no device can be matched to its driver")
    );
    // The evidence names the lines, at most ten.
    let garbage: String = (0..12).map(|i| format!("junk{i}\n")).collect();
    let (reason, evidence) = metadata_damage(&with(&garbage, alias, builtin)).expect("damaged");
    assert_eq!(reason, "12 of its lines are not what depmod writes");
    assert_eq!(evidence.len(), 10);
    assert_eq!(evidence[0], "modules.dep:1: no ':' after the module path (\"junk0\")");
    let (_, evidence) = metadata_damage(&with("", alias, builtin)).expect("empty");
    assert_eq!(evidence, ["modules.dep: 0 modules, modules.alias: 1 aliases, modules.builtin: 1 modules"]);
}
