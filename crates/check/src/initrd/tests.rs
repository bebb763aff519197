//! Unit tests of the coverage assessment on hand-written module metadata.

use fleetgate_kmod::IndexSources;

use super::*;

const KVER: &str = "6.1.0-56-amd64";

fn index() -> ModuleIndex {
    ModuleIndex::from_parts(IndexSources {
        kernel_version: Some(KVER),
        modules_dep: "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
                      kernel/drivers/nvme/host/nvme-core.ko:\n\
                      kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n\
                      kernel/fs/jbd2/jbd2.ko:\n",
        modules_alias: "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias fs-ext4 ext4\n",
        ..IndexSources::default()
    })
}

fn device(sysfs: &str, subsystem: &str, driver: Option<&str>, module: Option<&str>, modalias: Option<&str>) -> Device {
    Device {
        sysfs: sysfs.to_owned(),
        subsystem: Some(subsystem.to_owned()),
        driver: driver.map(str::to_owned),
        module: module.map(str::to_owned),
        modalias: modalias.map(str::to_owned),
        devname: None,
    }
}

const PORT: &str = "/sys/devices/pci0000:00/0000:00:1c.0";
const NVME: &str = "/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0";

/// An NVMe namespace behind a PCIe root port, as the lab and real
/// machines show it.
fn nvme_facts(port: Device) -> Facts {
    Facts {
        root_chain: vec![
            Device {
                devname: Some("nvme0n1p2".into()),
                ..device(
                    "/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1/nvme0n1p2",
                    "block",
                    None,
                    None,
                    None,
                )
            },
            device(&format!("{NVME}/nvme/nvme0"), "nvme", None, None, None),
            device(
                NVME,
                "pci",
                Some("nvme"),
                Some("nvme"),
                Some("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"),
            ),
            port,
        ],
        ..Facts::default()
    }
}

fn assess_with(facts: &Facts, initrd: &[&str]) -> Coverage {
    let index = index();
    let in_initrd: BTreeSet<String> = initrd.iter().map(|m| (*m).to_owned()).collect();
    let mut cov = Coverage::default();
    assess(
        &mut cov,
        &Inputs {
            index: &index,
            kver: KVER,
            in_initrd: &in_initrd,
            initrd: "/initrd",
            metadata: std::path::Path::new("/lib/modules/6.1.0-56-amd64"),
            fs_type: Some("ext4"),
        },
        facts,
    );
    cov
}

fn ids(cov: &Coverage) -> Vec<(&str, Severity)> {
    cov.findings.iter().map(|f| (f.id.as_str(), f.severity)).collect()
}

#[test]
fn pci_classes_come_from_the_modalias() {
    assert_eq!(pci_class("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"), Some((0x06, 0x04)));
    assert_eq!(pci_class("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02"), Some((0x01, 0x08)));
    assert_eq!(pci_class("virtio:d00000002v00001AF4"), None);
}

#[test]
fn a_pcie_root_port_with_a_built_in_driver_does_not_block_the_nvme_behind_it() {
    let port =
        device(PORT, "pci", Some("pcieport"), None, Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"));
    let cov = assess_with(&nvme_facts(port), &["nvme", "nvme_core", "ext4", "jbd2"]);
    assert_eq!(ids(&cov), [("initrd.coverage", Severity::Info)], "{:#?}", cov.findings);
    let evidence = cov.findings[0].evidence.join("\n");
    assert!(evidence.contains("driver nvme → nvme: in the initrd"), "{evidence}");
    assert!(evidence.contains("0000:00:1c.0") && evidence.contains("PCI bridge"), "{evidence}");
    assert_eq!(cov.needs.iter().filter(|n| n.device).count(), 1, "the bridge needs nothing: {:#?}", cov.needs);
    // Removing the controller's driver still blocks.
    let cov = assess_with(
        &nvme_facts(device(
            PORT,
            "pci",
            Some("pcieport"),
            None,
            Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"),
        )),
        &["ext4", "jbd2"],
    );
    assert!(ids(&cov).contains(&("initrd.missing-modules", Severity::Error)), "{:#?}", cov.findings);
}

#[test]
fn an_unknown_built_in_driver_above_the_controller_warns_and_on_the_controller_blocks() {
    // Not a bridge, built into the running kernel, unknown to the new one.
    let upstream =
        device(PORT, "pci", Some("mystery"), None, Some("pci:v00001234d00005678sv00000000sd00000000bc08sc80i00"));
    let cov = assess_with(&nvme_facts(upstream), &["nvme", "nvme_core", "ext4", "jbd2"]);
    assert_eq!(
        ids(&cov),
        [("initrd.driver-unverified", Severity::Warning), ("initrd.coverage", Severity::Info)],
        "{:#?}",
        cov.findings
    );
    assert!(cov.findings[0].message.contains("mystery"), "{}", cov.findings[0].message);
    // The root disk's own controller, built in and unknown: blocked.
    let mut facts = nvme_facts(device(
        PORT,
        "pci",
        Some("pcieport"),
        None,
        Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"),
    ));
    facts.root_chain[2] =
        device(NVME, "pci", Some("mystery-nvme"), None, Some("pci:v00001234d00005678sv00000000sd00000000bc01sc80i00"));
    let cov = assess_with(&facts, &["ext4", "jbd2"]);
    assert_eq!(ids(&cov).first(), Some(&("initrd.no-driver", Severity::Error)), "{:#?}", cov.findings);
    // A driver that was a module on the running host and is gone: blocked too.
    facts.root_chain[2] =
        device(NVME, "pci", Some("gone"), Some("gone"), Some("pci:v00001234d00005678sv00000000sd00000000bc01sc80i00"));
    facts.root_chain.push(device("/sys/devices/pci0000:00", "pci", Some("other"), None, None));
    let cov = assess_with(&facts, &["ext4", "jbd2"]);
    assert_eq!(ids(&cov).first(), Some(&("initrd.no-driver", Severity::Error)), "{:#?}", cov.findings);
}

#[test]
fn missing_modules_names_only_what_is_missing() {
    let port =
        device(PORT, "pci", Some("pcieport"), None, Some("pci:v00001B36d0000000Csv00001AF4sd00001100bc06sc04i00"));
    // nvme is there, only its dependency nvme_core is not.
    let cov = assess_with(&nvme_facts(port.clone()), &["nvme", "ext4", "jbd2"]);
    let f = cov.findings.iter().find(|f| f.id == "initrd.missing-modules").expect("missing modules");
    assert!(
        f.message.starts_with("the new initrd lacks nvme_core (dependencies of nvme, which is there without them)"),
        "{}",
        f.message
    );
    assert_eq!(f.fix.as_deref(), Some(r#"boot.initrd.availableKernelModules = [ "nvme" ];"#));
    // Both missing: the driver first, then its dependency.
    let cov = assess_with(&nvme_facts(port), &["ext4", "jbd2"]);
    let f = cov.findings.iter().find(|f| f.id == "initrd.missing-modules").expect("missing modules");
    assert!(
        f.message.starts_with("the new initrd lacks nvme (and their dependencies nvme_core) needed"),
        "{}",
        f.message
    );
}

mod branches;
