//! Facts of lab hosts over real SSH, one host per disk bus: virtio +
//! systemd-boot (UEFI), NVMe with native multipath + GRUB (BIOS), SATA
//! behind AHCI + systemd-boot.

use std::time::Duration;

use fleetgate_facts::{Facts, Firmware, Loader, Severity, collect};
use fleetgate_lab::Lab;
use fleetgate_lab::testing::LabGuard;
use fleetgate_transport::{Ssh, SshTarget};

fn facts_of(lab: &Lab, host: &str) -> Facts {
    let config = lab.dir().ssh_config().display().to_string();
    let ssh = Ssh::new(SshTarget::parse(&format!("ssh://{host}")).expect("target"), vec!["-F".into(), config]);
    collect(&ssh, Duration::from_secs(60)).expect("facts over ssh")
}

fn chain_modules(facts: &Facts) -> Vec<(String, String)> {
    facts.root_chain.iter().filter_map(|d| Some((d.driver.clone()?, d.module.clone()?))).collect()
}

#[test]
fn lab_hosts_of_every_disk_bus() -> anyhow::Result<()> {
    let lab = LabGuard::up(&["web1=virtio,systemd-boot", "db1=nvme,grub", "st1=sata,systemd-boot"])?;

    let web1 = facts_of(&lab, "web1");
    assert_eq!(web1.hostname.as_deref(), Some("web1"));
    assert_eq!(web1.root_block_name(), Some("vda2"));
    assert_eq!(web1.root.as_ref().and_then(|r| r.fs_type.as_deref()), Some("ext4"));
    assert_eq!(
        chain_modules(&web1),
        [("virtio_blk".into(), "virtio_blk".into()), ("virtio-pci".into(), "virtio_pci".into())]
    );
    assert_eq!(web1.disk_link("by-label", "NIXOS_ROOT").map(|l| l.target.as_str()), Some("/dev/vda2"));
    assert_eq!(web1.boot.firmware, Some(Firmware::Uefi));
    assert_eq!(web1.boot.loader, Some(Loader::SystemdBoot));
    assert!(web1.boot.entries.iter().any(|e| e.id == "nixos-generation-1.conf"));
    assert!(web1.boot.loader_conf.iter().any(|l| l.starts_with("default ")));
    let boot_id = lab.ssh("web1", "cat /proc/sys/kernel/random/boot_id")?;
    assert_eq!(web1.boot_id.as_deref(), Some(boot_id.trim()));
    let current = web1.current_system.clone().expect("current system");
    let expected = lab.ssh("web1", "readlink -f /run/current-system")?;
    assert_eq!(current.path, expected.trim());
    assert_eq!(current.files.get("switch-inhibitors").map(String::as_str), Some(r#"{"dbus-implementation":"dbus"}"#));
    assert!(current.links.get("initrd").is_some_and(|p| p.ends_with("/initrd")));
    assert_eq!(web1.booted_system.as_ref().map(|s| s.path.as_str()), Some(current.path.as_str()));
    assert_eq!(web1.generations.len(), 1);
    assert_eq!(web1.generations[0].path, current.path);
    let ids = web1.block_ids.clone().expect("blkid ran");
    assert!(
        ids.iter().any(|b| b.devname == "/dev/vda2" && b.tags.get("LABEL").map(String::as_str) == Some("NIXOS_ROOT"))
    );

    let db1 = facts_of(&lab, "db1");
    assert_eq!(db1.root_block_name(), Some("nvme0n1p2"));
    // The namespace hangs off the multipath subsystem; the driver is found
    // through the controller's PCI function.
    assert!(db1.root_chain.iter().any(|d| d.subsystem.as_deref() == Some("nvme-subsystem")));
    assert!(db1.root_chain.iter().any(|d| d.subsystem.as_deref() == Some("nvme") && d.name() == "nvme0"));
    assert_eq!(chain_modules(&db1), [("nvme".into(), "nvme".into())]);
    assert_eq!(db1.boot.firmware, Some(Firmware::Bios));
    assert_eq!(db1.boot.loader, Some(Loader::Grub));
    // Entries in NixOS's submenu carry the path grub-reboot takes.
    let gen1 = db1
        .boot
        .entries
        .iter()
        .find(|e| e.title.as_deref().is_some_and(|t| t.starts_with("NixOS - Configuration 1 ")))
        .unwrap_or_else(|| panic!("{:?}", db1.boot.entries));
    assert_eq!(gen1.id, format!("NixOS - All configurations>{}", gen1.title.as_deref().unwrap_or_default()));
    assert!(db1.boot.entries.iter().any(|e| e.id == "NixOS"), "{:?}", db1.boot.entries);

    let st1 = facts_of(&lab, "st1");
    assert_eq!(st1.root_block_name(), Some("sda2"));
    assert_eq!(chain_modules(&st1), [("sd".into(), "sd_mod".into()), ("ahci".into(), "ahci".into())]);
    let scsi = st1.root_chain.iter().find(|d| d.driver.as_deref() == Some("sd")).expect("scsi disk");
    assert_eq!(scsi.modalias.as_deref(), Some("scsi:t-0x00"));

    for facts in [&web1, &db1, &st1] {
        assert!(
            !facts.findings.iter().any(|f| f.severity >= Severity::Warning),
            "{}: {:#?}",
            facts.target,
            facts.findings
        );
        assert!(facts.nix_free_bytes.is_some_and(|b| b > 0));
    }
    let left = lab.down()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn an_unreachable_host_is_an_error_not_empty_facts() {
    let ssh = Ssh::new(
        SshTarget::parse("ssh://nobody@127.0.0.1:1").expect("target"),
        ["-F", "/dev/null", "-o", "UserKnownHostsFile=/dev/null"].map(str::to_owned).to_vec(),
    );
    let err = collect(&ssh, Duration::from_secs(30)).expect_err("unreachable");
    assert!(matches!(err, fleetgate_facts::FactsError::Transport(ref t) if t.is_unreachable()), "{err:?}");
}
