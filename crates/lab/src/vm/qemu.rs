//! The QEMU machine of a VM host: q35, the root disk on the host's bus,
//! UEFI (OVMF, with the host's own variable store) for systemd-boot hosts and
//! SeaBIOS for GRUB hosts, user networking with only sshd forwarded (to
//! loopback), the serial port on QEMU's stdout (the supervisor keeps the
//! console log) and QMP on a unix socket (power control).
//!
//! Acceleration: KVM only when it really works here. `/dev/kvm` may exist and
//! open while the CPU offers no virtualisation (nested setups): QEMU then
//! starts and dies on the first instruction it cannot emulate. So a tiny
//! guest (the machine's kernel, no root: it must reach its panic) is run under
//! KVM first; only if it gets there is KVM used, else TCG.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::layout::HostDir;
use crate::process;
use crate::spec::{Bootloader, DiskBus};
use crate::state::HostState;

/// Debian's OVMF (package `ovmf`): the firmware code, and the empty variable
/// store each UEFI host gets a copy of.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Guest memory.
const MEMORY_MIB: u32 = 1024;
/// How long the KVM probe may take before KVM counts as not working. A
/// working KVM reaches the probe kernel's panic in about a second.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// How QEMU runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// How much more CPU priority a VM gets than the suite's other processes.
pub const QEMU_NICE: &str = "-10";

/// `qemu-system-x86_64`, started through `nice -n -10` (the lab runs as
/// root): under TCG a guest's one vCPU is one busy host thread, and the VM
/// tests — one at a time, `.config/nextest.toml` — are the suite's longest
/// chain, while the lab tests beside them are not on it. At the default
/// priority a VM got about half a core of CI's two beside two lab tests (its
/// scenarios took twice what they take alone); at `-10` it takes the core it
/// needs and the lab tests share the rest. Every thread QEMU starts inherits
/// the priority (`nice` execs QEMU: the child's pid is QEMU's).
pub fn qemu_command() -> Command {
    let mut qemu = Command::new("nice");
    qemu.args(["-n", QEMU_NICE, "qemu-system-x86_64"]);
    qemu
}

/// Whether a host boots with UEFI (OVMF), else BIOS (SeaBIOS).
pub fn uses_uefi(host: &HostState) -> bool {
    matches!(host.spec.bootloader, Bootloader::SystemdBoot | Bootloader::GrubEfi)
}

/// The QEMU command line of `host`. QEMU's stdout is the serial port.
pub fn command(host: &HostState, dir: &HostDir, accel: Accel) -> anyhow::Result<Command> {
    let port = host.ssh_port.ok_or_else(|| anyhow::anyhow!("{} has no ssh port", host.name()))?;
    let mut qemu = qemu_command();
    qemu.args(["-name", host.name(), "-accel", accel.as_str(), "-machine", "q35", "-smp", "1"])
        .args(["-m", &MEMORY_MIB.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        // A reset ends this QEMU; the supervisor starts a fresh one.
        .arg("-no-reboot")
        .arg("-pidfile")
        .arg(dir.qemu_pid_file())
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", dir.qmp_socket().display()))
        // QEMU's human monitor, for a person looking into a VM (`info registers`).
        .arg("-monitor")
        .arg(format!("unix:{},server=on,wait=off", dir.root().join("monitor.sock").display()))
        .args(["-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"]);
    if uses_uefi(host) {
        qemu.arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=1,file={}", dir.efi_vars().display()));
    } else {
        // SeaBIOS's serial console (its `etc/sercon-port` file, a 16-bit port
        // number): the BIOS and GRUB's menu reach the serial port too.
        qemu.arg("-fw_cfg").arg(format!("name=etc/sercon-port,file={}", sercon_port_file(dir)?.display()));
    }
    qemu.arg("-drive").arg(format!("file={},if=none,id=root,format=raw,cache=unsafe", dir.disk_image().display()));
    let serial = &host.disks.serial;
    match host.spec.disk {
        DiskBus::Virtio => qemu.args(["-device", &format!("virtio-blk-pci,drive=root,serial={serial}")]),
        DiskBus::Nvme => qemu.args(["-device", &format!("nvme,drive=root,serial={serial}")]),
        DiskBus::Sata => qemu.args(["-device", "ide-hd,drive=root,bus=ide.0"]),
    };
    // `restrict=on`: the guest reaches nothing but the loopback services a
    // test points its forwards at (`forward`); only the forwarded port
    // reaches it. No option ROM: iPXE would only slow the boot down.
    let forwards = super::forward::netdev_options(dir, &crate::lab::lab_binary()?);
    qemu.args(["-netdev", &format!("user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22{forwards}")])
        .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
        .args(["-device", "virtio-rng-pci"]);
    Ok(qemu)
}

fn sercon_port_file(dir: &HostDir) -> anyhow::Result<PathBuf> {
    let path = dir.root().join("sercon-port");
    fs::write(&path, 0x3f8u16.to_le_bytes())?;
    Ok(path)
}

/// KVM if a probe guest runs under it, else TCG. The answer is kept for the
/// rest of this machine's boot in `cache_dir`.
pub fn accel(cache_dir: &Path, kernel: &Path) -> Accel {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = cache_dir.join("accel.json");
    if let Ok(text) = fs::read_to_string(&cache) {
        if let Ok((cached_boot, accel)) = serde_json::from_str::<(String, Accel)>(&text) {
            if cached_boot == boot_id {
                return accel;
            }
        }
    }
    let accel = if kvm_works(kernel) { Accel::Kvm } else { Accel::Tcg };
    if fs::create_dir_all(cache_dir).is_ok() {
        let _ = fs::write(&cache, serde_json::to_string(&(boot_id, accel)).unwrap_or_default());
    }
    accel
}

/// Boots `kernel` without a root under KVM: it works if the kernel gets as
/// far as its panic (and QEMU, with `-no-reboot`, exits).
fn kvm_works(kernel: &Path) -> bool {
    let Ok(file) = fs::File::open("/dev/kvm") else { return false };
    drop(file);
    let mut probe = Command::new("qemu-system-x86_64");
    probe
        .args(["-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot", "-serial", "stdio", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"]);
    match process::run_status(&mut probe, KVM_PROBE_TIMEOUT) {
        Ok((_, stdout, _)) => stdout.contains("Kernel panic"),
        Err(_) => false,
    }
}
