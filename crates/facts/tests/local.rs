//! Facts of this machine, read live — only what holds on any Linux machine
//! (Debian 12 included) — and the checked-in facts of a virtio VM for the
//! virtio-specific shape.
//!
//! `tests/fixtures/virtio-vm.facts.json` was captured with
//! `fleetgate facts --target local --json` on a Debian 12 VM whose root
//! (ext4) is a virtio disk `/dev/vda` with the virtio drivers built into
//! the running kernel; loop devices of lab runs were removed.

use std::path::Path;
use std::time::Duration;

use fleetgate_facts::{Facts, Severity, collect};
use fleetgate_transport::Local;

fn local() -> Facts {
    collect(&Local, Duration::from_secs(60)).expect("the facts script runs locally")
}

fn virtio_fixture() -> Facts {
    Facts::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/virtio-vm.facts.json"))
        .expect("fixture loads")
}

#[test]
fn local_facts_hold_what_every_linux_machine_has() {
    let facts = local();
    assert_eq!(facts.target, "local");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(facts.kernel_release.as_deref(), Some(release.trim()));
    assert!(facts.kernel_release.as_deref().is_some_and(|r| !r.is_empty()));
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot_id");
    assert_eq!(facts.boot_id.as_deref(), Some(boot_id.trim()));
    let root = facts.root.clone().expect("the root mount is found");
    assert!(root.fs_type.as_deref().is_some_and(|t| !t.is_empty()), "{root:?}");
    assert!(!facts.root_chain.is_empty(), "the root's sysfs chain: {:#?}", facts.findings);
    assert!(facts.root_block_name().is_some(), "{:#?}", facts.root_chain);
    assert!(facts.memory_total_bytes.is_some_and(|m| m > 0));
    assert_eq!(facts.current_system.is_some(), Path::new("/run/current-system").exists());
    if facts.current_system.is_none() {
        assert!(facts.findings.iter().any(|f| f.id == "facts.not-nixos" && f.severity == Severity::Info));
    }
    assert!(!facts.findings.iter().any(|f| f.severity == Severity::Error), "{:#?}", facts.findings);
}

#[test]
fn a_virtio_vm_has_the_virtio_root_chain() {
    let facts = virtio_fixture();
    let root = facts.root.clone().expect("root found");
    assert_eq!(root.fs_type.as_deref(), Some("ext4"));
    assert_eq!(root.source.as_deref(), Some("/dev/vda"));
    assert_eq!(facts.root_block_name(), Some("vda"));
    let virtio = facts
        .root_chain
        .iter()
        .find(|d| d.subsystem.as_deref() == Some("virtio"))
        .expect("a virtio device on the chain");
    assert_eq!(virtio.driver.as_deref(), Some("virtio_blk"));
    assert_eq!(virtio.module, None, "built into that VM's kernel");
    assert_eq!(virtio.modalias.as_deref(), Some("virtio:d00000002v00001AF4"));
    let pci =
        facts.root_chain.iter().find(|d| d.subsystem.as_deref() == Some("pci")).expect("a PCI device on the chain");
    assert_eq!(pci.driver.as_deref(), Some("virtio-pci"));
    assert!(pci.modalias.as_deref().is_some_and(|m| m.starts_with("pci:v00001AF4d00001042")));
    assert!(facts.block_devices.iter().any(|b| b.name == "vda"));
    assert!(facts.current_system.is_none());
}

#[test]
fn facts_json_round_trips() {
    for facts in [local(), virtio_fixture()] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("facts.json");
        std::fs::write(&path, facts.to_json()).expect("write");
        assert_eq!(Facts::load(&path).expect("loads"), facts);
    }
}

#[test]
fn a_shell_without_sysfs_or_tools_gives_unknowns_and_findings_not_a_crash() {
    // The script with a PATH where no tool exists: only shell builtins work.
    let out = std::process::Command::new("env")
        .args(["-i", "PATH=/nonexistent", "/bin/sh", "-c"])
        .arg(
            fleetgate_facts::SCRIPT
                .lines()
                .map(|l| if l.starts_with("PATH=") { "PATH=/nonexistent" } else { l })
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .output()
        .expect("sh runs");
    let facts = fleetgate_facts::parse("test", &String::from_utf8_lossy(&out.stdout));
    assert!(facts.missing_tools.contains(&"readlink".to_owned()), "{:?}", facts.missing_tools);
    assert!(facts.findings.iter().any(|f| f.id == "facts.missing-tools"));
    // The root device chain needs no tool: links to directories are
    // resolved with the shell's own `cd -P`. What does need one is unknown.
    assert!(!facts.root_chain.is_empty(), "{:#?}", facts.findings);
    assert!(facts.block_ids.is_none() && facts.nix_free_bytes.is_none(), "{facts:#?}");
    let nothing = fleetgate_facts::parse("test", "garbage\n");
    assert!(nothing.findings.iter().any(|f| f.id == "facts.no-output" && f.severity == Severity::Error));
}
