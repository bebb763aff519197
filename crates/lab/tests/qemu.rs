#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns
//! Calibrates the lab against a real kernel. The lab decides whether a
//! generation boots with its own stage-1 model (`stage1.rs`: the initrd
//! unpacked with zstd/cpio, kmod's modprobe against the initrd's own module
//! tree). Here the very same fixture initrds are booted by real QEMU with the
//! machine's real Debian kernel on real virtio-blk, NVMe and AHCI disks, and
//! the lab's verdict must match what the kernel did, case by case.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetgate_lab::firmware::BootChoice;
use fleetgate_lab::hardware::{Hardware, LoopNumbers};
use fleetgate_lab::lab::build_systems;
use fleetgate_lab::process;
use fleetgate_lab::stage1::{self, Verdict};
use fleetgate_lab::state::{DiskIdentity, HostState, LabState};
use fleetgate_lab::{Bootloader, DiskBus, HostSpec, fixture};

struct Case {
    host: &'static str,
    bus: DiskBus,
    drop_virtio: bool,
    root_label: &'static str,
    boots: bool,
}

const CASES: [Case; 5] = [
    Case { host: "qvirtio", bus: DiskBus::Virtio, drop_virtio: false, root_label: "NIXOS_ROOT", boots: true },
    Case { host: "qnovirtio", bus: DiskBus::Virtio, drop_virtio: true, root_label: "NIXOS_ROOT", boots: false },
    Case { host: "qnvme", bus: DiskBus::Nvme, drop_virtio: false, root_label: "NIXOS_ROOT", boots: true },
    Case { host: "qsata", bus: DiskBus::Sata, drop_virtio: false, root_label: "NIXOS_ROOT", boots: true },
    Case { host: "qlabel", bus: DiskBus::Virtio, drop_virtio: false, root_label: "OTHER_ROOT", boots: false },
];

fn host_state(case: &Case) -> HostState {
    HostState {
        spec: HostSpec::new(case.host, case.bus, Bootloader::Grub).unwrap(),
        address: "10.203.250.11".into(),
        netns: "unused".into(),
        veth: "unused".into(),
        disks: DiskIdentity::derive(250, case.host),
        ssh_port: None,
        root_loop: Some("/dev/loop-unused".into()),
        esp_loop: None,
    }
}

/// Boots `toplevel`'s kernel and initrd in QEMU on a disk of `bus` holding an
/// ext4 filesystem labelled NIXOS_ROOT; returns the serial console.
fn qemu_boot(toplevel: &Path, bus: DiskBus, disk: &Path) -> String {
    let _ = fs::remove_file(disk);
    fs::File::create(disk).unwrap().set_len(64 << 20).unwrap();
    process::run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "NIXOS_ROOT"]).arg(disk), Duration::from_secs(60))
        .unwrap();
    let params = fs::read_to_string(toplevel.join("kernel-params")).unwrap();
    let drive = format!("file={},if=none,id=root,format=raw", disk.display());
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(toplevel.join("kernel"))
        .arg("-initrd")
        .arg(toplevel.join("initrd"))
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=-1 fleetgate.rootwait=6 fleetgate.probe init={}/init {params}",
                toplevel.display()
            ),
        ])
        .args(["-drive", &drive]);
    match bus {
        DiskBus::Virtio => qemu.args(["-device", "virtio-blk-pci,drive=root"]),
        DiskBus::Nvme => qemu.args(["-device", "nvme,serial=fgl0001,drive=root"]),
        DiskBus::Sata => qemu.args(["-machine", "q35", "-device", "ide-hd,drive=root,bus=ide.0"]),
    };
    let (_, stdout, stderr) = process::run_status(&mut qemu, Duration::from_secs(240)).unwrap();
    assert!(stdout.contains("fleetgate-stage1:"), "stage 1 never reported:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn lab_stage1_model_agrees_with_a_real_kernel_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = tmp.path().join("fleet");
    let state = LabState {
        id: 250,
        bridge: "unused".into(),
        gateway: "unused".into(),
        hosts: CASES.iter().map(host_state).collect(),
    };
    let mut knobs = fixture::write(&fleet, &state, Path::new("/dev/null")).unwrap();
    for case in &CASES {
        let host = knobs.hosts.get_mut(case.host).unwrap();
        if case.drop_virtio {
            host.available_kernel_modules.retain(|m| !m.starts_with("virtio"));
        }
        host.root_device = format!("/dev/disk/by-label/{}", case.root_label);
    }
    knobs.save(&fleet).unwrap();
    let names: Vec<String> = CASES.iter().map(|c| c.host.to_owned()).collect();
    let systems: BTreeMap<String, String> = build_systems(&fleet, &names).unwrap();
    for case in &CASES {
        let toplevel = Path::new(&systems[case.host]);
        let choice = BootChoice {
            entry_id: case.host.into(),
            title: case.host.into(),
            reason: "test".into(),
            kernel: toplevel.join("kernel"),
            initrds: vec![toplevel.join("initrd")],
            options: format!(
                "init={}/init {}",
                toplevel.display(),
                fs::read_to_string(toplevel.join("kernel-params")).unwrap()
            ),
        };
        let hardware = Hardware::of(&host_state(case), &LoopNumbers { root: (7, 0), esp: None });
        let verdict = stage1::boot(&choice, &hardware, &tmp.path().join(format!("work-{}", case.host))).unwrap();
        let lab_boots = matches!(verdict, Verdict::ReachesStage2 { .. });
        let console = qemu_boot(toplevel, case.bus, &tmp.path().join("disk.img"));
        let kernel_boots = console.contains("fleetgate-stage1: mounted");
        assert_eq!(
            kernel_boots,
            case.boots,
            "{}: the real kernel {}:\n{console}",
            case.host,
            if kernel_boots { "booted" } else { "did not boot" }
        );
        assert_eq!(
            lab_boots, kernel_boots,
            "{}: the lab said {verdict:?}, the real kernel disagrees:\n{console}",
            case.host
        );
        if !case.boots {
            assert!(console.contains("A start job is running for /dev/disk/by-label/"), "{console}");
        }
    }
}
